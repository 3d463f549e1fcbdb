// The 16-lane (AVX-512) kernels: channelwise_conv3d.cpp compiled with
// X3D_CW_LANES = 16 beside its 8-lane build in one extension, registered
// under X3D_CW_NS + "_l16" (see that file).
#define X3D_CW_LANES 16
#define X3D_CW_PASTE_(a, b) a##b
#define X3D_CW_PASTE(a, b) X3D_CW_PASTE_(a, b)
#define X3D_CW_REG_NS X3D_CW_PASTE(X3D_CW_NS, _l16)
#include "channelwise_conv3d.cpp"
