// Native ray caster over Embree 3 (Debian's libembree-dev), loaded by neurodrive/raycast/embree.py
// through ctypes: a plain C interface, numpy buffers in, numpy buffers out (ctypes releases the GIL).
//
// Why: open3d's RaycastingScene casts one ray at a time (rtcIntersect1) and holds the GIL. A
// sensor's rays form a grid (camera pixels, LiDAR beams x azimuths) whose 4x4 tiles are coherent,
// and Embree traces such tiles as 16-ray packets much faster (benchmarks/bench_embree_packets.py:
// 15.8 ms instead of 23.9 ms for a 640x360 camera). Actors are Embree instances of meshes built
// once in their box frames, so a placement commits a top-level BVH of a few entries and every ray
// meets the background and all actors in one traversal.
//
// Objects: a device; meshes (one Embree scene each, built once); placements (a top-level scene of
// instances: entry 0 the background, entry k + 1 the k-th actor) that are cast against.
#include <Python.h>
#include <embree3/rtcore.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

namespace {

struct Mesh {
  RTCScene scene = nullptr;
  std::vector<float> vertices;    // (V, 3) a copy: normals are computed from it
  std::vector<uint32_t> indices;  // (F, 3)
};

struct Placement {
  RTCScene scene = nullptr;
  std::vector<const Mesh*> meshes;  // per instance
  std::vector<float> rotation;      // (n, 9) row-major world-from-local rotation per instance
};

const float kInf = std::numeric_limits<float>::infinity();

struct Outputs {
  float* t;        // (n,) distance along the ray, inf on a miss
  int32_t* geom;   // (n,) instance index, -1 on a miss
  int32_t* prim;   // (n,) triangle index, -1 on a miss
  float* uv;       // (n, 2) barycentric u, v
  float* normals;  // (n, 3) unit normal facing the ray, or null
};

inline void write_hit(const Placement& p, const float* dir, unsigned inst, unsigned prim, float tfar, float u, float v,
                      size_t i, const Outputs& out) {
  if (inst == RTC_INVALID_GEOMETRY_ID) {
    out.t[i] = kInf;
    out.geom[i] = -1;
    out.prim[i] = -1;
    out.uv[2 * i] = 0.f;
    out.uv[2 * i + 1] = 0.f;
    if (out.normals) out.normals[3 * i] = out.normals[3 * i + 1] = out.normals[3 * i + 2] = 0.f;
    return;
  }
  out.t[i] = tfar;
  out.geom[i] = static_cast<int32_t>(inst);
  out.prim[i] = static_cast<int32_t>(prim);
  out.uv[2 * i] = u;
  out.uv[2 * i + 1] = v;
  if (!out.normals) return;
  const Mesh& m = *p.meshes[inst];
  const uint32_t* f = &m.indices[3 * static_cast<size_t>(prim)];
  const float* a = &m.vertices[3 * static_cast<size_t>(f[0])];
  const float* b = &m.vertices[3 * static_cast<size_t>(f[1])];
  const float* c = &m.vertices[3 * static_cast<size_t>(f[2])];
  float e1[3] = {b[0] - a[0], b[1] - a[1], b[2] - a[2]}, e2[3] = {c[0] - a[0], c[1] - a[1], c[2] - a[2]};
  float nl[3] = {e1[1] * e2[2] - e1[2] * e2[1], e1[2] * e2[0] - e1[0] * e2[2], e1[0] * e2[1] - e1[1] * e2[0]};
  const float* r = &p.rotation[9 * static_cast<size_t>(inst)];
  float n[3] = {r[0] * nl[0] + r[1] * nl[1] + r[2] * nl[2], r[3] * nl[0] + r[4] * nl[1] + r[5] * nl[2],
                r[6] * nl[0] + r[7] * nl[1] + r[8] * nl[2]};
  float len = std::sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]);
  float s = len > 0.f ? 1.f / len : 0.f;
  if (n[0] * dir[0] + n[1] * dir[1] + n[2] * dir[2] > 0.f) s = -s;
  out.normals[3 * i] = n[0] * s;
  out.normals[3 * i + 1] = n[1] * s;
  out.normals[3 * i + 2] = n[2] * s;
}

// Runs body(first, last) over [0, n) on `threads` threads (the caller's included), in chunks
// handed out in turn so both threads get a share of the expensive parts of an image.
template <class Body>
void parallel_chunks(size_t n, size_t chunk, int threads, Body body) {
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t start = next.fetch_add(chunk); start < n; start = next.fetch_add(chunk)) body(start, std::min(n, start + chunk));
  };
  std::vector<std::thread> pool;
  for (int k = 1; k < threads; k++) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
}

}  // namespace

extern "C" {

void* nd_device_new(const char* config) { return rtcNewDevice(config); }

// Last Embree error of the device (0: none).
int nd_device_error(void* device) { return static_cast<int>(rtcGetDeviceError(static_cast<RTCDevice>(device))); }

void* nd_mesh_new(void* device, const float* vertices, int64_t num_vertices, const int32_t* triangles, int64_t num_triangles) {
  auto* m = new Mesh;
  m->vertices.assign(vertices, vertices + 3 * num_vertices);
  m->indices.assign(reinterpret_cast<const uint32_t*>(triangles), reinterpret_cast<const uint32_t*>(triangles) + 3 * num_triangles);
  RTCDevice dev = static_cast<RTCDevice>(device);
  m->scene = rtcNewScene(dev);
  rtcSetSceneBuildQuality(m->scene, RTC_BUILD_QUALITY_MEDIUM);
  if (num_triangles > 0) {
    RTCGeometry g = rtcNewGeometry(dev, RTC_GEOMETRY_TYPE_TRIANGLE);
    rtcSetSharedGeometryBuffer(g, RTC_BUFFER_TYPE_VERTEX, 0, RTC_FORMAT_FLOAT3, m->vertices.data(), 0, 3 * sizeof(float), num_vertices);
    rtcSetSharedGeometryBuffer(g, RTC_BUFFER_TYPE_INDEX, 0, RTC_FORMAT_UINT3, m->indices.data(), 0, 3 * sizeof(uint32_t), num_triangles);
    rtcCommitGeometry(g);
    rtcAttachGeometry(m->scene, g);
    rtcReleaseGeometry(g);
  }
  rtcCommitScene(m->scene);
  return m;
}

void nd_mesh_free(void* mesh) {
  auto* m = static_cast<Mesh*>(mesh);
  rtcReleaseScene(m->scene);
  delete m;
}

// A top-level scene of `count` instances; transforms (count, 4, 4) row-major float64, world from local.
void* nd_placement_new(void* device, void* const* meshes, const double* transforms, int64_t count) {
  RTCDevice dev = static_cast<RTCDevice>(device);
  auto* p = new Placement;
  p->scene = rtcNewScene(dev);
  rtcSetSceneBuildQuality(p->scene, RTC_BUILD_QUALITY_LOW);
  p->rotation.resize(9 * count);
  for (int64_t k = 0; k < count; k++) {
    const Mesh* m = static_cast<const Mesh*>(meshes[k]);
    p->meshes.push_back(m);
    const double* T = transforms + 16 * k;
    float xfm[12];  // RTC_FORMAT_FLOAT3X4_ROW_MAJOR
    for (int r = 0; r < 3; r++)
      for (int c = 0; c < 4; c++) xfm[4 * r + c] = static_cast<float>(T[4 * r + c]);
    for (int r = 0; r < 3; r++)
      for (int c = 0; c < 3; c++) p->rotation[9 * k + 3 * r + c] = static_cast<float>(T[4 * r + c]);
    RTCGeometry g = rtcNewGeometry(dev, RTC_GEOMETRY_TYPE_INSTANCE);
    rtcSetGeometryInstancedScene(g, m->scene);
    rtcSetGeometryTimeStepCount(g, 1);
    rtcSetGeometryTransform(g, 0, RTC_FORMAT_FLOAT3X4_ROW_MAJOR, xfm);
    rtcCommitGeometry(g);
    rtcAttachGeometryByID(p->scene, g, static_cast<unsigned>(k));
    rtcReleaseGeometry(g);
  }
  rtcCommitScene(p->scene);
  return p;
}

void nd_placement_free(void* placement) {
  auto* p = static_cast<Placement*>(placement);
  rtcReleaseScene(p->scene);
  delete p;
}

// Rays of one origin on a (rows, cols) grid, dirs (rows * cols, 3) row-major, traced as packets of
// 4 x 4 neighbouring rays. normals may be null.
void nd_cast_grid(void* placement, const float* origin, const float* dirs, int64_t rows, int64_t cols, float* t, int32_t* geom,
                  int32_t* prim, float* uv, float* normals, int threads) {
  const Placement& p = *static_cast<Placement*>(placement);
  Outputs out{t, geom, prim, uv, normals};
  const int64_t tile_rows = (rows + 3) / 4, tile_cols = (cols + 3) / 4;
  parallel_chunks(static_cast<size_t>(tile_rows * tile_cols), 64, threads, [&](size_t first, size_t last) {
    RTCIntersectContext ctx;
    rtcInitIntersectContext(&ctx);
    ctx.flags = RTC_INTERSECT_CONTEXT_FLAG_COHERENT;
    alignas(64) RTCRayHit16 rh;
    alignas(64) int valid[16];
    int64_t index[16];
    for (size_t tile = first; tile < last; tile++) {
      const int64_t r0 = 4 * (static_cast<int64_t>(tile) / tile_cols), c0 = 4 * (static_cast<int64_t>(tile) % tile_cols);
      for (int k = 0; k < 16; k++) {
        const int64_t r = r0 + k / 4, c = c0 + k % 4;
        const bool ok = r < rows && c < cols;
        valid[k] = ok ? -1 : 0;
        index[k] = ok ? r * cols + c : -1;
        const float* d = ok ? dirs + 3 * index[k] : dirs;
        rh.ray.org_x[k] = origin[0];
        rh.ray.org_y[k] = origin[1];
        rh.ray.org_z[k] = origin[2];
        rh.ray.dir_x[k] = d[0];
        rh.ray.dir_y[k] = d[1];
        rh.ray.dir_z[k] = d[2];
        rh.ray.tnear[k] = 0.f;
        rh.ray.tfar[k] = kInf;
        rh.ray.mask[k] = 0xFFFFFFFFu;
        rh.ray.flags[k] = 0;
        rh.ray.time[k] = 0.f;
        rh.hit.geomID[k] = RTC_INVALID_GEOMETRY_ID;
        rh.hit.instID[0][k] = RTC_INVALID_GEOMETRY_ID;
      }
      rtcIntersect16(valid, p.scene, &ctx, &rh);
      for (int k = 0; k < 16; k++) {
        if (index[k] < 0) continue;
        const unsigned inst = rh.hit.geomID[k] == RTC_INVALID_GEOMETRY_ID ? RTC_INVALID_GEOMETRY_ID : rh.hit.instID[0][k];
        write_hit(p, dirs + 3 * index[k], inst, rh.hit.primID[k], rh.ray.tfar[k], rh.hit.u[k], rh.hit.v[k], static_cast<size_t>(index[k]), out);
      }
    }
  });
}

// Arbitrary rays one at a time: origins (n, 3), or (1, 3) when origin_stride is 0.
void nd_cast_rays(void* placement, const float* origins, int64_t origin_stride, const float* dirs, int64_t n, float* t, int32_t* geom,
                  int32_t* prim, float* uv, float* normals, int threads) {
  const Placement& p = *static_cast<Placement*>(placement);
  Outputs out{t, geom, prim, uv, normals};
  parallel_chunks(static_cast<size_t>(n), 1024, threads, [&](size_t first, size_t last) {
    RTCIntersectContext ctx;
    rtcInitIntersectContext(&ctx);
    for (size_t i = first; i < last; i++) {
      const float* o = origins + origin_stride * static_cast<int64_t>(i);
      RTCRayHit rh;
      rh.ray.org_x = o[0];
      rh.ray.org_y = o[1];
      rh.ray.org_z = o[2];
      rh.ray.dir_x = dirs[3 * i];
      rh.ray.dir_y = dirs[3 * i + 1];
      rh.ray.dir_z = dirs[3 * i + 2];
      rh.ray.tnear = 0.f;
      rh.ray.tfar = kInf;
      rh.ray.mask = 0xFFFFFFFFu;
      rh.ray.flags = 0;
      rh.ray.time = 0.f;
      rh.hit.geomID = RTC_INVALID_GEOMETRY_ID;
      rh.hit.instID[0] = RTC_INVALID_GEOMETRY_ID;
      rtcIntersect1(p.scene, &ctx, &rh);
      const unsigned inst = rh.hit.geomID == RTC_INVALID_GEOMETRY_ID ? RTC_INVALID_GEOMETRY_ID : rh.hit.instID[0];
      write_hit(p, dirs + 3 * i, inst, rh.hit.primID, rh.ray.tfar, rh.hit.u, rh.hit.v, i, out);
    }
  });
}

// Colours of hit rays from baked texels: for hit ray i (geom[i] >= 0) of mesh g = geom[i], the texel
// of (prim[i], uv[i]) in that mesh's atlas (packed[g][triangle] = first texel << 8 | cells per
// edge, see scene/texels.py) and its colour colours[g][texel] (r, g, b bytes, 255 in the fourth
// if training saw it). Writes rgb (n, 3) in [0, 1] for hit rays only; returns the unseen hits.
int64_t nd_shade_texels(int64_t n, const int32_t* geom, const int32_t* prim, const float* uv, const int64_t* const* packed,
                        const uint32_t* const* colours, float* rgb, int threads) {
  std::atomic<int64_t> unseen{0};
  parallel_chunks(static_cast<size_t>(n), 4096, threads, [&](size_t first, size_t last) {
    int64_t local_unseen = 0;
    for (size_t i = first; i < last; i++) {
      const int32_t g = geom[i];
      if (g < 0) continue;
      const int64_t cell = packed[g][prim[i]];
      const int32_t cells = static_cast<int32_t>(cell & 255);
      int32_t row = std::min(static_cast<int32_t>(uv[2 * i] * cells), cells - 1);  // u, v >= 0: truncation is floor
      int32_t col = std::min(static_cast<int32_t>(uv[2 * i + 1] * cells), cells - 1 - row);
      const int64_t texel = (cell >> 8) + row * cells - ((row * (row - 1)) >> 1) + col;
      const uint32_t c = colours[g][texel];
      rgb[3 * i] = static_cast<float>(c & 255u) * (1.f / 255.f);
      rgb[3 * i + 1] = static_cast<float>((c >> 8) & 255u) * (1.f / 255.f);
      rgb[3 * i + 2] = static_cast<float>((c >> 16) & 255u) * (1.f / 255.f);
      local_unseen += (c >> 24) == 0;
    }
    unseen += local_unseen;
  });
  return unseen;
}

// Image-based appearance (neurodrive/render/photo_blend.py holds the numpy twin and says what it
// computes). For each of n rays from centre (unit dirs, float32) and each of m candidate photos: the
// ray's point (t along it where it hit geometry[i] >= 0: the background 0 or actor g; far_depth along
// it on a miss, geometry -1), the photo's pose for that geometry (transforms[(j * groups + g) * 12],
// a row-major 3x4 world-from-camera; NaN first entry: the photo does not see it), projection with
// Brown-Conrady distortion, the depth test against the photo's depth map (a miss is seen where the
// photo's rays missed too), the penalty
// (angle between the rays, as the chord of unit vectors + res_weight x relative extra distance), the border ramp and the bilinear colour with
// the photo's exposure undone. Then the Unstructured-Lumigraph blend of the k best: weights
// (1 - p / p_next) / (p + 1e-3) x ramp (p_next: the (k+1)-th penalty, or 2 p_k + 0.05 when fewer
// photos saw the point), through the requested exposure (3x4), clipped to [0, 1]. Writes rgb (n, 3)
// where seen (n,) (any weight left) and leaves the other rows as they are.
struct PhotoView {
  const double* intrinsics;  // fx, skew, cx, fy, cy
  const double* distortion;  // k1, k2, p1, p2, k3
  int32_t width, height;
  const float* depth;
  int32_t dh, dw;
  const uint8_t* image;   // (height, width, 3)
  const float* inverse;   // (3, 3) row-major: scene = inverse @ (photo - offset)
  const float* offset;    // (3,)
  double depth_scale_u, depth_scale_v;  // depth-map cells per photo pixel
};

void nd_blend_photos(int64_t n, const double* centre, const float* dirs, const float* t, const int32_t* geometry,
                     float far_depth, int64_t m, int64_t groups, const double* transforms, const double* intrinsics, const double* distortion,
                     const int32_t* sizes, const void* const* depths, const int32_t* depth_sizes,
                     const void* const* images, const float* inverses, const float* offsets, float tol_rel,
                     float tol_abs, float res_weight, float border_px, int64_t k, const float* exposure,
                     float* rgb, uint8_t* seen, int threads) {
  std::vector<PhotoView> views(static_cast<size_t>(m));
  for (int64_t j = 0; j < m; j++)
    views[j] = {intrinsics + 5 * j, distortion + 5 * j, sizes[2 * j], sizes[2 * j + 1],
                static_cast<const float*>(depths[j]), depth_sizes[2 * j], depth_sizes[2 * j + 1],
                static_cast<const uint8_t*>(images[j]), inverses + 9 * j, offsets + 3 * j,
                static_cast<double>(depth_sizes[2 * j + 1]) / sizes[2 * j],
                static_cast<double>(depth_sizes[2 * j]) / sizes[2 * j + 1]};
  parallel_chunks(static_cast<size_t>(n), 4096, threads, [&](size_t first, size_t last) {
    std::vector<float> pen(m), ramp(m), col(3 * m), sorted(m);
    for (size_t i = first; i < last; i++) {
      const bool far = geometry[i] < 0;  // a miss: looked up far_depth along the ray
      const int32_t g = far ? 0 : geometry[i];
      const double along = far ? far_depth : t[i];
      const double vx = along * dirs[3 * i], vy = along * dirs[3 * i + 1], vz = along * dirs[3 * i + 2];
      const double qx = centre[0] + vx, qy = centre[1] + vy, qz = centre[2] + vz;
      const double view_dist = std::sqrt(vx * vx + vy * vy + vz * vz);
      const double inv_view = 1.0 / std::max(view_dist, 1e-9);
      const float view_dist_f = static_cast<float>(std::max(view_dist, 1e-6));
      for (int64_t j = 0; j < m; j++) {
        pen[j] = kInf;
        const double* T = transforms + (j * groups + g) * 12;
        if (std::isnan(T[0])) continue;
        const PhotoView& ph = views[j];
        const double rx = qx - T[3], ry = qy - T[7], rz = qz - T[11];
        const double pz = rx * T[2] + ry * T[6] + rz * T[10];
        if (!(pz > 1e-6)) continue;
        const double inv_z = 1.0 / pz;
        double x = (rx * T[0] + ry * T[4] + rz * T[8]) * inv_z, y = (rx * T[1] + ry * T[5] + rz * T[9]) * inv_z;
        const double* d = ph.distortion;
        if (d[0] != 0 || d[1] != 0 || d[2] != 0 || d[3] != 0 || d[4] != 0) {
          const double r2 = x * x + y * y, radial = 1 + r2 * (d[0] + r2 * (d[1] + r2 * d[4]));
          const double xd = x * radial + 2 * d[2] * x * y + d[3] * (r2 + 2 * x * x);
          y = y * radial + d[2] * (r2 + 2 * y * y) + 2 * d[3] * x * y;
          x = xd;
        }
        const double* K = ph.intrinsics;
        const double u = K[0] * x + K[1] * y + K[2], v = K[3] * y + K[4];
        if (!(u >= 1 && u < ph.width - 1 && v >= 1 && v < ph.height - 1)) continue;
        const int64_t du = std::min<int64_t>(static_cast<int64_t>(u * ph.depth_scale_u), ph.dw - 1);
        const int64_t dv = std::min<int64_t>(static_cast<int64_t>(v * ph.depth_scale_v), ph.dh - 1);
        const float seen_depth = ph.depth[dv * ph.dw + du], z = static_cast<float>(pz);
        if (far ? std::isfinite(seen_depth) : !(std::fabs(seen_depth - z) <= tol_rel * z + tol_abs)) continue;
        const float fx_ = static_cast<float>(rx), fy_ = static_cast<float>(ry), fz_ = static_cast<float>(rz);
        const float dist = std::sqrt(fx_ * fx_ + fy_ * fy_ + fz_ * fz_);
        const float cosine = static_cast<float>((rx * vx + ry * vy + rz * vz) * inv_view) / std::max(dist, 1e-9f);
        const float angle = std::sqrt(std::max(0.f, 2.f - 2.f * cosine));  // chord: the angle for small angles
        const float farther = std::max(0.f, dist / view_dist_f - 1.f);
        const float border = static_cast<float>(std::min(std::min(u, v), std::min(ph.width - u, ph.height - v)));
        pen[j] = angle + res_weight * farther;
        ramp[j] = border_px > 0 ? std::min(1.f, std::max(0.f, border / border_px)) : 1.f;
        const double gx = std::min(std::max(u - 0.5, 0.0), ph.width - 1.001);
        const double gy = std::min(std::max(v - 0.5, 0.0), ph.height - 1.001);
        const int64_t x0 = static_cast<int64_t>(gx), y0 = static_cast<int64_t>(gy);
        const float fx = static_cast<float>(gx - x0), fy = static_cast<float>(gy - y0);
        const uint8_t* a = ph.image + 3 * (y0 * ph.width + x0);
        const uint8_t* b = a + 3 * ph.width;
        float c[3];
        for (int ch = 0; ch < 3; ch++) {
          const float top = a[ch] * (1 - fx) + a[3 + ch] * fx, bottom = b[ch] * (1 - fx) + b[3 + ch] * fx;
          c[ch] = (top * (1 - fy) + bottom * fy) * (1.f / 255.f) - ph.offset[ch];
        }
        for (int ch = 0; ch < 3; ch++)
          col[3 * j + ch] = ph.inverse[3 * ch] * c[0] + ph.inverse[3 * ch + 1] * c[1] + ph.inverse[3 * ch + 2] * c[2];
      }
      std::copy(pen.begin(), pen.end(), sorted.begin());
      std::sort(sorted.begin(), sorted.end());
      const float kth = sorted[k - 1];
      float threshold = k < m ? std::max(sorted[k], kth + 1e-3f) : kInf;  // ties at the k-th: still weighted
      if (!std::isfinite(threshold)) threshold = std::isfinite(kth) ? 2 * kth + 0.05f : kInf;
      float total = 0, acc[3] = {0, 0, 0};
      for (int64_t j = 0; j < m; j++) {
        if (!(pen[j] < threshold)) continue;
        const float w = (std::isfinite(threshold) ? 1 - pen[j] / threshold : 1.f) / (pen[j] + 1e-3f) * ramp[j];
        total += w;
        for (int ch = 0; ch < 3; ch++) acc[ch] += w * col[3 * j + ch];
      }
      seen[i] = total > 1e-6f;
      if (!seen[i]) continue;
      for (int ch = 0; ch < 3; ch++) acc[ch] /= total;
      for (int ch = 0; ch < 3; ch++) {  // the requested exposure (3x4 row-major), clipped to [0, 1]
        const float* e = exposure + 4 * ch;
        rgb[3 * i + ch] = std::min(1.f, std::max(0.f, e[0] * acc[0] + e[1] * acc[1] + e[2] * acc[2] + e[3]));
      }
    }
  });
}

}  // extern "C"

// A module object so the library imports as neurodrive._embree_caster (its __file__ is what
// ctypes loads); the functions above are reached through ctypes, not through this module.
static struct PyModuleDef embree_module = {PyModuleDef_HEAD_INIT, "_embree_caster", "Native Embree ray caster (see neurodrive/raycast/embree.py).", -1, nullptr};

PyMODINIT_FUNC PyInit__embree_caster(void) { return PyModule_Create(&embree_module); }
