"""hetc.schedule"""
