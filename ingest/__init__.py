"""Turn repositories, PDFs, images and video into one budgeted, deterministic multimodal prompt."""
