"""Adapters to other frameworks: LangChain (arrives with the UI/LangChain issue)."""
