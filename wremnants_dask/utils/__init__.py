"""Small utilities every stage uses: atomic output files and provenance metadata."""
