# The sources of lwc_ir: the IR, model I/O, analysis, Huffman coding and the dataset readers
# (lib/src/data: image folders, .npy/.npz, IDX and ONNX test data, preprocessing). Shared by
# lib/CMakeLists.txt and the fuzz build (tests/fuzz), which compiles them with its own flags.
set(LWC_IR_SOURCES)
foreach(src
    dtype.cpp tensor.cpp graph.cpp model_io.cpp signal_cleanup.cpp shape_inference.cpp analysis.cpp npy.cpp metrics.cpp
    graph_edit.cpp model_fixups.cpp opset_lowering.cpp pass.cpp huffman.cpp weight_coding.cpp json_text.cpp status.cpp
    data/dataset.cpp data/arrays.cpp data/image_decode.cpp data/io.cpp data/labels.cpp data/preprocess.cpp)
  list(APPEND LWC_IR_SOURCES ${CMAKE_CURRENT_LIST_DIR}/src/${src})
endforeach()
