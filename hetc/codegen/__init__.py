"""hetc.codegen"""
