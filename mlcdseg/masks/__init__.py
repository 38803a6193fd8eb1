"""Masks and images as data: the codecs and image decoding every other package builds on.

`brush_rle` is Label Studio's brush RLE (bit-exact with label-studio-sdk); `codecs` holds the
mask formats (brush RLE at an image size, COCO RLE, polygons) and pixel overlap counts;
`images` decodes any image the way Label Studio shows it (EXIF orientation, 8-bit RGB) and draws
masks for people. Pure functions over numpy and PIL; nothing here knows about models or servers.
"""
