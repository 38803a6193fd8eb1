"""RefCOCO in and out: the REFER dataset format, a Label Studio export written as a dataset,
and a RefCOCO dataset imported as Label Studio tasks.

`dataset` knows the REFER layout (refs(<splitBy>).p, instances.json, splits) and loads one;
`exporter` builds the dataset from an export (human masks as RLE, per-sentence IoU of the
model); `importer` writes Label Studio tasks with the ground-truth masks as regions.
"""
