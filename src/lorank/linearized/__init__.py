"""lorank.linearized"""
