"""hetc.memory"""
