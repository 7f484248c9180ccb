"""The CLI (`cli`) and the commands that compose the stages: predict, prepare, demo."""
