"""hetc.report"""
