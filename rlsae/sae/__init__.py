"""rlsae.sae"""
