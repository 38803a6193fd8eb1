"""Masks and images as data: the codecs and image decoding every other package builds on.

`brush_rle` is Label Studio's brush RLE (bit-exact with label-studio-sdk); `codecs` holds the
mask formats (brush RLE at an image size, COCO RLE, polygons), pixel overlap counts and
the one mask IoU (`mask_iou`, `iou_from_counts`: both masks empty is 1.0, as gIoU counts it);
`images` decodes any image the way Label Studio shows it (EXIF orientation, 8-bit RGB) and draws
masks for people. Pure functions over numpy and PIL; nothing here knows about models or servers.
"""
