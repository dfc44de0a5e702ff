"""Data: the dataset catalog, sample records, format readers and writers, the omg-shapes generator."""
