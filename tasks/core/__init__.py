"""The floor of the house: errors, file helpers, messages, binary formats.

Nothing here imports another wing of tasks/."""
