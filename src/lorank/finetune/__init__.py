"""lorank.finetune"""
