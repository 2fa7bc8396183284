"""hetc.validate"""
