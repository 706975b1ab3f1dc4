"""DetectNet_v2 itself, as TAO defines it: preprocessing of images for the network, its output grid and
box encoding, and the facts the deployment steps read from its experiment spec. It builds on the spec
model and the formats only, never on the stage machinery, so that code outside the pipeline (a server,
a notebook) can use it."""
