"""The fleet's modelled world (docs/algorithms.md section 2): device profiles, compute time, radio channel, mobility.

Every figure these modules produce is modelled, not measured; reports must label them so.
Pure Python + numpy (no torch), so they can be imported anywhere.
"""
