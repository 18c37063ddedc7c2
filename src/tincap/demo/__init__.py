"""`python demo.py ckpt_path=...`: a local web page (Gradio) that shows what a checkpoint makes of a dropped image."""
