"""Running the notebooks headless (papermill) and tidying what they wrote."""
