"""rlsae.agents"""
