"""Steel defect localisation: evaluation and tuning on a labelled split, batch
prediction to masks, overlays and a submission CSV, and the model card."""
