"""Data: reading sources (`sources`), the table of row formats (`formats`), canonical rows (`rows`) and a recipe's
train and eval splits (`splits`)."""
