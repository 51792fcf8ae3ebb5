// Device intrinsics added by kernel authors beyond the emulator core (included at the end of
// cuda_emu.h). Each is a host implementation of the CUDA device function of the same name.
#pragma once
