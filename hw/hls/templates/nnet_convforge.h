// convforge's own hls4ml layers (io_stream, channels-last): the operators hls4ml 1.3
// cannot express bit-exactly. Integer semantics: docs/integer_spec.md (INTEGER_SPEC v1.1).
//
// Every stream element is one pixel: an nnet::array of all its channels (hls4ml's
// io_stream packing). Pixels arrive in raster order (row-major).
//
// Layers that need a window of input rows (the deformable convolutions, max pool) keep
// a ring of input rows: rows [y - RING + 1, y] after reading row y. Each output row is
// computed once every input row it can touch has been read, so the ring size is the
// vertical reach of one output row (documented per layer).

#ifndef NNET_CONVFORGE_H_
#define NNET_CONVFORGE_H_

#include "ap_int.h"
#include "hls_stream.h"
#include "nnet_common.h"

namespace nnet {

// ---------------------------------------------------------------------------------------
// INTEGER_SPEC §1: rshift_round(v, s) = floor((v + 2**(s-1)) / 2**s), v for s == 0.
// ap_int's >> on a signed value is arithmetic (floor), + widens by one bit: no overflow.
template <int W> ap_int<W> cf_rshift_round(ap_int<W> v, unsigned s) {
    #pragma HLS INLINE
    if (s == 0)
        return v;
    ap_int<W + 1> half = ap_int<W + 1>(1) << (s - 1);
    ap_int<W + 1> sum = ap_int<W + 1>(v) + half;
    return ap_int<W>(sum >> s);
}

// sat(v, lo, hi) of INTEGER_SPEC §1.
template <int W> ap_int<W> cf_sat(ap_int<W> v, int lo, int hi) {
    #pragma HLS INLINE
    if (v < lo)
        return lo;
    if (v > hi)
        return hi;
    return v;
}

// A ring of RING input rows of a (H, W, C) stream, read on demand.
template <class data_T, unsigned RING, unsigned H, unsigned W, unsigned C> struct cf_row_ring {
    typename data_T::value_type buf[RING][W][C];
    int rows_read;

    cf_row_ring() : rows_read(0) {}

    // Read rows until row `last` (clipped to the image) is in the ring.
    void fill_to(hls::stream<data_T> &data, int last) {
        if (last > int(H) - 1)
            last = int(H) - 1;
    FillRows:
        while (rows_read <= last) {
        FillCols:
            for (unsigned x = 0; x < W; x++) {
                #pragma HLS PIPELINE
                data_T px = data.read();
                for (unsigned c = 0; c < C; c++) {
                    #pragma HLS UNROLL
                    buf[rows_read % RING][x][c] = px[c];
                }
            }
            rows_read++;
        }
    }

    // Consume the rows no output needed (stride leftovers), so the stream is emptied.
    void drain(hls::stream<data_T> &data) {
    DrainRows:
        while (rows_read < int(H)) {
            for (unsigned x = 0; x < W; x++) {
                #pragma HLS PIPELINE
                data.read();
            }
            rows_read++;
        }
    }

    bool inside(int y, int x) const { return y >= 0 && y < int(H) && x >= 0 && x < int(W); }

    // x[c, y, x] with zero padding outside the image (INTEGER_SPEC §4).
    typename data_T::value_type at(int y, int x, unsigned c) const {
        if (!inside(y, x))
            return 0;
        return buf[y % RING][x][c];
    }
};

// ---------------------------------------------------------------------------------------
// Requantisation, INTEGER_SPEC §3: y[c] = sat(rshift_round((acc[c] + bias[c]) * M[c], S[c]), lo, hi).
// One pixel per cycle (II=1), all channels in parallel. prod_bits holds the worst case
// |acc + bias| * M + 2**(S-1) (computed by the converter from the accumulator type).
struct cf_requant_config {
    static const unsigned n_pixels = 1;
    static const unsigned n_chan = 1;
    static const int lo = 0;
    static const int hi = 255;
    static const unsigned prod_bits = 64;
    typedef ap_int<32> bias_t;
    typedef ap_uint<15> mult_t;
    typedef ap_uint<6> shift_t;
};

template <class data_T, class res_T, typename CONFIG_T>
void cf_requant(hls::stream<data_T> &data, hls::stream<res_T> &res, const typename CONFIG_T::bias_t bias[CONFIG_T::n_chan],
                const typename CONFIG_T::mult_t mult[CONFIG_T::n_chan],
                const typename CONFIG_T::shift_t shift[CONFIG_T::n_chan]) {
RequantPixels:
    for (unsigned p = 0; p < CONFIG_T::n_pixels; p++) {
        #pragma HLS PIPELINE
        data_T in = data.read();
        res_T out;
        PRAGMA_DATA_PACK(out)
    RequantChannels:
        for (unsigned c = 0; c < CONFIG_T::n_chan; c++) {
            #pragma HLS UNROLL
            ap_int<CONFIG_T::prod_bits> v = ap_int<CONFIG_T::prod_bits>(in[c]) + bias[c];
            v = v * mult[c];
            v = cf_rshift_round<CONFIG_T::prod_bits>(v, shift[c]);
            out[c] = cf_sat<CONFIG_T::prod_bits>(v, CONFIG_T::lo, CONFIG_T::hi);
        }
        res.write(out);
    }
}

// ---------------------------------------------------------------------------------------
// Residual add, INTEGER_SPEC §4: y = sat(rshift_round(a*Ma + b*Mb, S), lo, hi).
struct cf_add_config {
    static const unsigned n_pixels = 1;
    static const unsigned n_chan = 1;
    static const long long mult_a = 0;
    static const long long mult_b = 0;
    static const unsigned shift = 0;
    static const int lo = -128;
    static const int hi = 127;
    static const unsigned prod_bits = 64;
};

template <class a_T, class b_T, class res_T, typename CONFIG_T>
void cf_add(hls::stream<a_T> &data_a, hls::stream<b_T> &data_b, hls::stream<res_T> &res) {
AddPixels:
    for (unsigned p = 0; p < CONFIG_T::n_pixels; p++) {
        #pragma HLS PIPELINE
        a_T a = data_a.read();
        b_T b = data_b.read();
        res_T out;
        PRAGMA_DATA_PACK(out)
    AddChannels:
        for (unsigned c = 0; c < CONFIG_T::n_chan; c++) {
            #pragma HLS UNROLL
            ap_int<CONFIG_T::prod_bits> v = ap_int<CONFIG_T::prod_bits>(a[c]) * CONFIG_T::mult_a;
            v += ap_int<CONFIG_T::prod_bits>(b[c]) * CONFIG_T::mult_b;
            v = cf_rshift_round<CONFIG_T::prod_bits>(v, CONFIG_T::shift);
            out[c] = cf_sat<CONFIG_T::prod_bits>(v, CONFIG_T::lo, CONFIG_T::hi);
        }
        res.write(out);
    }
}

// ---------------------------------------------------------------------------------------
// Square deformable depthwise 3x3 (CoDeNet), INTEGER_SPEC §4:
//   acc[c, oy, ox] = sum_{i,j} w[c, i, j] * x[c, oy*s + (i-1)*D, ox*s + (j-1)*D],  D = dmap[oy, ox] in [0, d_max].
// The output row oy reaches input rows oy*s - d_max .. oy*s + d_max: a ring of 2*d_max + 1 rows
// ((2*d_max + 1) * in_width * n_chan words of buffer). Weights are w[c*9 + i*3 + j].
// Output: the accumulator (bias and requantisation follow in cf_requant).
struct cf_square_deform_config {
    static const unsigned in_height = 1;
    static const unsigned in_width = 1;
    static const unsigned n_chan = 1;
    static const unsigned out_height = 1;
    static const unsigned out_width = 1;
    static const unsigned stride = 1;
    static const unsigned d_max = 8;
    typedef ap_int<4> weight_t;
};

template <class data_T, class map_T, class res_T, typename CONFIG_T>
void cf_square_deform_dw(hls::stream<data_T> &data, hls::stream<map_T> &dmap, hls::stream<res_T> &res,
                         const typename CONFIG_T::weight_t weights[CONFIG_T::n_chan * 9]) {
    static const unsigned ring = 2 * CONFIG_T::d_max + 1;
    cf_row_ring<data_T, ring, CONFIG_T::in_height, CONFIG_T::in_width, CONFIG_T::n_chan> rows;
SquareRows:
    for (unsigned oy = 0; oy < CONFIG_T::out_height; oy++) {
        rows.fill_to(data, int(oy * CONFIG_T::stride + CONFIG_T::d_max));
    SquareCols:
        for (unsigned ox = 0; ox < CONFIG_T::out_width; ox++) {
            #pragma HLS PIPELINE
            map_T d_in = dmap.read();
            int d = int(d_in[0]);
            res_T out;
            PRAGMA_DATA_PACK(out)
        SquareChannels:
            for (unsigned c = 0; c < CONFIG_T::n_chan; c++) {
                #pragma HLS UNROLL
                typename res_T::value_type acc = 0; // the accumulator type (exact width, §6)
            SquareTaps:
                for (int k = 0; k < 9; k++) {
                    int y = int(oy * CONFIG_T::stride) + (k / 3 - 1) * d;
                    int x = int(ox * CONFIG_T::stride) + (k % 3 - 1) * d;
                    acc += weights[c * 9 + k] * rows.at(y, x, c);
                }
                out[c] = acc;
            }
            res.write(out);
        }
    }
    rows.drain(data);
}

// ---------------------------------------------------------------------------------------
// Bilinear deformable 3x3 (DCNv1, one offset group, offsets within +-R px), INTEGER_SPEC §4:
//   py = (oy*s - p + i*d) * 2**F + dy,  y0 = floor(py / 2**F),  fy = py - y0 * 2**F   (same for x)
//   V  = (2**F-fy)(2**F-fx) x[y0,x0] + (2**F-fy) fx x[y0,x0+1] + fy (2**F-fx) x[y0+1,x0] + fy fx x[y0+1,x0+1]
//   acc[o] = sum_{c in group(o), i, j} w[o, c, i, j] * V          (2F fractional bits)
// Offsets: channel 2*(i*3+j) is dy, 2*(i*3+j)+1 is dx (torchvision order). Output row oy
// reaches input rows oy*s - p - R .. oy*s - p + 2d + R + 1: a ring of 2d + 2R + 2 rows.
// Weights are w[((o * cg + ci) * 9) + i*3 + j] with cg = n_chan / groups.
struct cf_bilinear_deform_config {
    static const unsigned in_height = 1;
    static const unsigned in_width = 1;
    static const unsigned n_chan = 1;
    static const unsigned n_filt = 1;
    static const unsigned groups = 1;
    static const unsigned out_height = 1;
    static const unsigned out_width = 1;
    static const unsigned stride = 1;
    static const int pad = 1;
    static const unsigned dilation = 1;
    static const unsigned frac_bits = 4;
    static const unsigned range = 7;
    typedef ap_int<4> weight_t;
    typedef ap_int<24> sample_t;
};

template <class data_T, class off_T, class res_T, typename CONFIG_T>
void cf_bilinear_deform(hls::stream<data_T> &data, hls::stream<off_T> &offset, hls::stream<res_T> &res,
                        const typename CONFIG_T::weight_t weights[CONFIG_T::n_filt * (CONFIG_T::n_chan / CONFIG_T::groups) * 9]) {
    static const unsigned ring = 2 * CONFIG_T::dilation + 2 * CONFIG_T::range + 2;
    static const unsigned cg = CONFIG_T::n_chan / CONFIG_T::groups;
    static const unsigned og = CONFIG_T::n_filt / CONFIG_T::groups;
    static const int one = 1 << CONFIG_T::frac_bits;
    cf_row_ring<data_T, ring, CONFIG_T::in_height, CONFIG_T::in_width, CONFIG_T::n_chan> rows;
    typename CONFIG_T::sample_t samples[9][CONFIG_T::n_chan];
    #pragma HLS ARRAY_PARTITION variable = samples complete dim = 0
BilinearRows:
    for (unsigned oy = 0; oy < CONFIG_T::out_height; oy++) {
        rows.fill_to(data, int(oy * CONFIG_T::stride) - CONFIG_T::pad + int(2 * CONFIG_T::dilation + CONFIG_T::range + 1));
    BilinearCols:
        for (unsigned ox = 0; ox < CONFIG_T::out_width; ox++) {
            #pragma HLS PIPELINE
            off_T off = offset.read();
        BilinearTaps:
            for (int k = 0; k < 9; k++) {
                int py = (int(oy * CONFIG_T::stride) - CONFIG_T::pad + (k / 3) * int(CONFIG_T::dilation)) * one + int(off[2 * k]);
                int px = (int(ox * CONFIG_T::stride) - CONFIG_T::pad + (k % 3) * int(CONFIG_T::dilation)) * one +
                         int(off[2 * k + 1]);
                int y0 = py >> CONFIG_T::frac_bits; // arithmetic shift: floor for negatives
                int x0 = px >> CONFIG_T::frac_bits;
                int fy = py - (y0 << CONFIG_T::frac_bits);
                int fx = px - (x0 << CONFIG_T::frac_bits);
                for (unsigned c = 0; c < CONFIG_T::n_chan; c++) {
                    #pragma HLS UNROLL
                    typename CONFIG_T::sample_t v = (one - fy) * (one - fx) * int(rows.at(y0, x0, c));
                    v += (one - fy) * fx * int(rows.at(y0, x0 + 1, c));
                    v += fy * (one - fx) * int(rows.at(y0 + 1, x0, c));
                    v += fy * fx * int(rows.at(y0 + 1, x0 + 1, c));
                    samples[k][c] = v;
                }
            }
            res_T out;
            PRAGMA_DATA_PACK(out)
        BilinearFilters:
            for (unsigned o = 0; o < CONFIG_T::n_filt; o++) {
                typename res_T::value_type acc = 0; // the accumulator type (exact width, §6)
                unsigned grp = o / og;
                for (unsigned ci = 0; ci < cg; ci++) {
                    for (int k = 0; k < 9; k++) {
                        acc += weights[(o * cg + ci) * 9 + k] * samples[k][grp * cg + ci];
                    }
                }
                out[o] = acc;
            }
            res.write(out);
        }
    }
    rows.drain(data);
}

// ---------------------------------------------------------------------------------------
// Max pool k x k, stride s, padding p, INTEGER_SPEC §4: max over the taps inside the input,
// padded taps ignored (hls4ml 1.3's io_stream pooling requires p == 0 and k == s, and pads
// with zeros, which is wrong for int8 inputs). Ring of k rows.
struct cf_maxpool_config {
    static const unsigned in_height = 1;
    static const unsigned in_width = 1;
    static const unsigned n_chan = 1;
    static const unsigned out_height = 1;
    static const unsigned out_width = 1;
    static const unsigned pool_size = 2;
    static const unsigned stride = 2;
    static const int pad = 0;
};

template <class data_T, class res_T, typename CONFIG_T> void cf_maxpool(hls::stream<data_T> &data, hls::stream<res_T> &res) {
    cf_row_ring<data_T, CONFIG_T::pool_size, CONFIG_T::in_height, CONFIG_T::in_width, CONFIG_T::n_chan> rows;
PoolRows:
    for (unsigned oy = 0; oy < CONFIG_T::out_height; oy++) {
        int top = int(oy * CONFIG_T::stride) - CONFIG_T::pad;
        rows.fill_to(data, top + int(CONFIG_T::pool_size) - 1);
    PoolCols:
        for (unsigned ox = 0; ox < CONFIG_T::out_width; ox++) {
            #pragma HLS PIPELINE
            int left = int(ox * CONFIG_T::stride) - CONFIG_T::pad;
            res_T out;
            PRAGMA_DATA_PACK(out)
        PoolChannels:
            for (unsigned c = 0; c < CONFIG_T::n_chan; c++) {
                #pragma HLS UNROLL
                bool found = false;
                typename data_T::value_type best = 0;
                for (unsigned i = 0; i < CONFIG_T::pool_size; i++) {
                    for (unsigned j = 0; j < CONFIG_T::pool_size; j++) {
                        int y = top + int(i), x = left + int(j);
                        if (rows.inside(y, x)) {
                            typename data_T::value_type v = rows.at(y, x, c);
                            if (!found || v > best)
                                best = v;
                            found = true;
                        }
                    }
                }
                out[c] = best;
            }
            res.write(out);
        }
    }
    rows.drain(data);
}

// ---------------------------------------------------------------------------------------
// Channel slice (one output of a QGraph split): out[c] = in[first + c].
struct cf_slice_config {
    static const unsigned n_pixels = 1;
    static const unsigned n_chan_in = 1;
    static const unsigned first = 0;
    static const unsigned n_chan = 1;
};

template <class data_T, class res_T, typename CONFIG_T> void cf_slice(hls::stream<data_T> &data, hls::stream<res_T> &res) {
SlicePixels:
    for (unsigned p = 0; p < CONFIG_T::n_pixels; p++) {
        #pragma HLS PIPELINE
        data_T in = data.read();
        res_T out;
        PRAGMA_DATA_PACK(out)
        for (unsigned c = 0; c < CONFIG_T::n_chan; c++) {
            #pragma HLS UNROLL
            out[c] = in[CONFIG_T::first + c];
        }
        res.write(out);
    }
}

// ---------------------------------------------------------------------------------------
// ShuffleNet channel shuffle with g groups of n = C/g channels: out[j*g + i] = in[i*n + j].
struct cf_shuffle_config {
    static const unsigned n_pixels = 1;
    static const unsigned n_chan = 1;
    static const unsigned groups = 1;
};

template <class data_T, class res_T, typename CONFIG_T> void cf_shuffle(hls::stream<data_T> &data, hls::stream<res_T> &res) {
    static const unsigned per_group = CONFIG_T::n_chan / CONFIG_T::groups;
ShufflePixels:
    for (unsigned p = 0; p < CONFIG_T::n_pixels; p++) {
        #pragma HLS PIPELINE
        data_T in = data.read();
        res_T out;
        PRAGMA_DATA_PACK(out)
        for (unsigned o = 0; o < CONFIG_T::n_chan; o++) {
            #pragma HLS UNROLL
            out[o] = in[(o % CONFIG_T::groups) * per_group + o / CONFIG_T::groups];
        }
        res.write(out);
    }
}

} // namespace nnet

#endif
