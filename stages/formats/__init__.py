"""The file formats the pipeline reads and writes, each module wrapping one format and the library
that handles it: TAO's calibration TensorFile (h5py), TensorRT's calibration cache (text), ONNX
DetectNet_v2 models as TAO exports them (onnx), DeepStream's nvinfer config, KITTI labels. They import
nothing of the project but each other."""
