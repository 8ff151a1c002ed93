"""lorank.capacity"""
