"""The OMG-Seg model: CLIP backbone, pixel decoder, mask decoder with object and location queries, heads."""
