"""hetc.target"""
