"""rlsae.analysis"""
