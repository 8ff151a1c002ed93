"""lorank.ntk"""
