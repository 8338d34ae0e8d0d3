"""Marks on generated content: the plan from policy obligations, and the image writers."""
