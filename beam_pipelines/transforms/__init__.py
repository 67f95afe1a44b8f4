"""The annotate pipeline's transforms: image preparation, the unrolled agent loop, tools."""
