"""The Gradio web search UI (arrives with the UI issue)."""
