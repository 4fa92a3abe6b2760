"""rlsae.llm"""
