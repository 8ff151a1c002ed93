"""lorank.experiments"""
