"""rlsae.viewer"""
