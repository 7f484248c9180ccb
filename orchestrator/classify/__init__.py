"""Stage 4, classify: the VirNucPro MLP in numpy (`classifier`, loaded by a restricted unpickler),
frame and chunk labels (`consensus`), per-sequence calls and viral regions (`calls`)."""
