"""lorank.report"""
