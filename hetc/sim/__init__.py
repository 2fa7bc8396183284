"""hetc.sim"""
