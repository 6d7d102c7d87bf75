"""Spatter (water drops or mud), one of the four extra corruptions."""
