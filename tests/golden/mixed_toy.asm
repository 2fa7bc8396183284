; engine cpu (cpu, home dram): 2 compute, 2 wait
00000  wait sem.dma_dsp 3
00001  compute #4 cpu.Sigmoid 'sigmoid' (%g dram+0x1240 float32[1x16]) -> (%s dram+0x1280 float32[1x16])  ; task 12, 1540 ns
00002  wait sem.dma_dsp 4
00003  compute #6 cpu.Add 'add' (%s dram+0x1280 float32[1x16], %m dram+0x12c0 float32[1x16]) -> (%y dram+0x1240 float32[1x16])  ; task 14, 1560 ns
; engine npu (npu, home npu_sram): 3 compute, 1 wait, 1 signal
00000  wait sem.dma_npu 1
00001  compute #0 npu.Conv 'conv' (%x npu_sram+0x0 float32[1x2x4x4], %w npu_sram+0x80 float32[4x2x3x3], %b npu_sram+0x1c0 float32[4]) -> (%c npu_sram+0x200 float32[1x4x4x4])  ; task 4, 1000 ns
00002  compute #1 npu.Relu 'relu' (%c npu_sram+0x200 float32[1x4x4x4]) -> (%r npu_sram+0x0 float32[1x4x4x4])  ; task 6, 1010 ns
00003  compute #2 npu.Flatten 'flatten' (%r npu_sram+0x0 float32[1x4x4x4]) -> (%f npu_sram+0x0 float32[1x64])  ; task 7, 1020 ns
00004  signal sem.npu
; engine dsp (dsp, home dsp_tcm): 2 compute, 3 wait, 2 signal
00000  wait sem.dma_dsp 1
00001  wait sem.dma_npu_dsp 1
00002  compute #3 dsp.Gemm 'gemm' (%f dsp_tcm+0x1040 float32[1x64], %fw dsp_tcm+0x0 float32[64x16]) -> (%g dsp_tcm+0x1140 float32[1x16])  ; task 9, 1230 ns
00003  signal sem.dsp
00004  wait sem.dma_dsp 2
00005  compute #5 dsp.Mul 'mul' (%g dsp_tcm+0x1140 float32[1x16], %scale dsp_tcm+0x1000 float32[1x16]) -> (%m dsp_tcm+0x0 float32[1x16])  ; task 10, 1250 ns
00006  signal sem.dsp
; engine dma_npu (dma, dram <-> npu_sram): 3 dma, 1 signal
00000  dma %x dram+0x11c0 -> npu_sram+0x0 128 B  ; task 0, 113 ns
00001  dma %w dram+0x1080 -> npu_sram+0x80 288 B  ; task 2, 129 ns
00002  dma %b dram+0x0 -> npu_sram+0x1c0 16 B  ; task 3, 102 ns
00003  signal sem.dma_npu
; engine dma_dsp (dma, dram <-> dsp_tcm): 4 dma, 2 wait, 4 signal
00000  dma %fw dram+0x40 -> dsp_tcm+0x0 4096 B  ; task 1, 510 ns
00001  signal sem.dma_dsp
00002  dma %scale dram+0x1040 -> dsp_tcm+0x1000 64 B  ; task 5, 107 ns
00003  signal sem.dma_dsp
00004  wait sem.dsp 1
00005  dma %g dsp_tcm+0x1140 -> dram+0x1240 64 B  ; task 11, 107 ns
00006  signal sem.dma_dsp
00007  wait sem.dsp 2
00008  dma %m dsp_tcm+0x0 -> dram+0x12c0 64 B  ; task 13, 107 ns
00009  signal sem.dma_dsp
; engine dma_npu_dsp (dma, npu_sram <-> dsp_tcm): 1 dma, 1 wait, 1 signal
00000  wait sem.npu 1
00001  dma %f npu_sram+0x0 -> dsp_tcm+0x1040 256 B  ; task 8, 76 ns
00002  signal sem.dma_npu_dsp
