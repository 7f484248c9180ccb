"""The run loop and set-up `predict` and `embed` share: options, inputs scanned, backend opened,
windows embedded ahead and finished in order."""
