"""Re-deriving recorded decisions: the stored policy revisions and the replay over a log."""
