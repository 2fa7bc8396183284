"""hetc.frontend"""
