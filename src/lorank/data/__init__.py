"""lorank.data"""
