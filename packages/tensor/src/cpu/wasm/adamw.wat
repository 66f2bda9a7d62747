;; AdamW over one chunk of fp32 elements, four lanes at a time (WebAssembly SIMD), for the CPU
;; optimizer (adamwSimd.ts copies a chunk of each tensor in, calls `adamw`, copies p, m, v out).
;; Layout of the imported memory, CHUNK = 8192 elements of 4 bytes each:
;;   p at 0, g at 32768, m at 65536, v at 98304, and the bf16 copy of p (2 bytes each) at 131072.
;; n is rounded up to a multiple of 4 by the caller; lanes past its real count are ignored.
;; Per element, as PyTorch's AdamW with decoupled weight decay:
;;   g' = sign*g;  m = b1*m + c1*g';  v = b2*v + (c2*g')*g'
;;   p  = p*decay - (stepSize*m) / (sqrt(v)*invSqrtBc2 + eps)
(module
  (import "env" "memory" (memory 3))
  ;; The bf16 bits of p[0, n) at 131072, as f32ToBf16Bits rounds (to nearest, ties to even; a NaN
  ;; stays a quiet NaN of the same sign): the copy an optimizer writes beside the fp32 update
  ;; (autocast's, or the host copy an offloaded unit uploads), while the chunk is still in cache.
  (func (export "bf16") (param $n i32)
    (local $i i32) (local $end i32) (local $x v128) (local $r v128) (local $nan v128)
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $x (v128.load (local.get $i)))
        ;; x + 0x7fff + ((x >> 16) & 1), then the high half.
        (local.set $r
          (i32x4.shr_u
            (i32x4.add
              (i32x4.add (local.get $x) (i32x4.splat (i32.const 0x7fff)))
              (v128.and (i32x4.shr_u (local.get $x) (i32.const 16)) (i32x4.splat (i32.const 1))))
            (i32.const 16)))
        ;; NaN lanes (exponent all ones, mantissa not zero): the high half with the quiet bit set.
        (local.set $nan
          (i32x4.gt_u (v128.and (local.get $x) (i32x4.splat (i32.const 0x7fffffff))) (i32x4.splat (i32.const 0x7f800000))))
        (local.set $r
          (v128.bitselect
            (v128.or (i32x4.shr_u (local.get $x) (i32.const 16)) (i32x4.splat (i32.const 0x0040)))
            (local.get $r)
            (local.get $nan)))
        (i64.store offset=131072 (i32.shr_u (local.get $i) (i32.const 1))
          (i64x2.extract_lane 0 (i16x8.narrow_i32x4_u (local.get $r) (local.get $r))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $next))))
  (func (export "adamw")
    (param $n i32) (param $b1 f32) (param $b2 f32) (param $c1 f32) (param $c2 f32)
    (param $stepSize f32) (param $invSqrtBc2 f32) (param $eps f32) (param $decay f32) (param $sign f32)
    (local $i i32) (local $end i32)
    (local $B1 v128) (local $B2 v128) (local $C1 v128) (local $C2 v128) (local $ST v128)
    (local $INV v128) (local $E v128) (local $D v128) (local $S v128)
    (local $g v128) (local $m v128) (local $v v128)
    (local.set $B1 (f32x4.splat (local.get $b1)))
    (local.set $B2 (f32x4.splat (local.get $b2)))
    (local.set $C1 (f32x4.splat (local.get $c1)))
    (local.set $C2 (f32x4.splat (local.get $c2)))
    (local.set $ST (f32x4.splat (local.get $stepSize)))
    (local.set $INV (f32x4.splat (local.get $invSqrtBc2)))
    (local.set $E (f32x4.splat (local.get $eps)))
    (local.set $D (f32x4.splat (local.get $decay)))
    (local.set $S (f32x4.splat (local.get $sign)))
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $g (f32x4.mul (v128.load offset=32768 (local.get $i)) (local.get $S)))
        (local.set $m
          (f32x4.add (f32x4.mul (local.get $B1) (v128.load offset=65536 (local.get $i)))
                     (f32x4.mul (local.get $C1) (local.get $g))))
        (local.set $v
          (f32x4.add (f32x4.mul (local.get $B2) (v128.load offset=98304 (local.get $i)))
                     (f32x4.mul (f32x4.mul (local.get $C2) (local.get $g)) (local.get $g))))
        (v128.store offset=65536 (local.get $i) (local.get $m))
        (v128.store offset=98304 (local.get $i) (local.get $v))
        (v128.store (local.get $i)
          (f32x4.sub
            (f32x4.mul (v128.load (local.get $i)) (local.get $D))
            (f32x4.div
              (f32x4.mul (local.get $ST) (local.get $m))
              (f32x4.add (f32x4.mul (f32x4.sqrt (local.get $v)) (local.get $INV)) (local.get $E)))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $next)))))
