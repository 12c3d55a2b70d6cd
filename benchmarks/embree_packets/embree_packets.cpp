// Measures Embree 3 casting the benchmark camera's rays into the background mesh, one ray at a
// time (rtcIntersect1, what open3d's RaycastingScene does) and as coherent 4x4-pixel packets
// (rtcIntersect16), both on two threads. Inputs are written by bench_embree_packets.py, which also
// builds and runs this file (needs the Debian package libembree-dev).
#include <embree3/rtcore.h>
#include <cstdio>
#include <vector>
#include <thread>
#include <chrono>
#include <algorithm>
#include <cmath>
template <class T> std::vector<T> load(const char* f) { FILE* p = fopen(f, "rb"); fseek(p, 0, SEEK_END); long n = ftell(p); fseek(p, 0, SEEK_SET); std::vector<T> v(n / sizeof(T)); fread(v.data(), 1, n, p); fclose(p); return v; }
int main() {  // files: v.bin (V,3) float32, t.bin (F,3) uint32, d.bin (N,3) float32 in 4x4-pixel tiles, o.bin (3,) float32
  auto V = load<float>("v.bin"); auto F = load<unsigned>("t.bin"); auto D = load<float>("d.bin"); auto O = load<float>("o.bin");
  size_t nv = V.size() / 3, nf = F.size() / 3, nr = D.size() / 3;
  RTCDevice dev = rtcNewDevice(nullptr); RTCScene sc = rtcNewScene(dev);
  RTCGeometry g = rtcNewGeometry(dev, RTC_GEOMETRY_TYPE_TRIANGLE);
  float* vb = (float*)rtcSetNewGeometryBuffer(g, RTC_BUFFER_TYPE_VERTEX, 0, RTC_FORMAT_FLOAT3, 3 * sizeof(float), nv); std::copy(V.begin(), V.end(), vb);
  unsigned* ib = (unsigned*)rtcSetNewGeometryBuffer(g, RTC_BUFFER_TYPE_INDEX, 0, RTC_FORMAT_UINT3, 3 * sizeof(unsigned), nf); std::copy(F.begin(), F.end(), ib);
  rtcCommitGeometry(g); rtcAttachGeometry(sc, g); rtcReleaseGeometry(g);
  auto t0 = std::chrono::steady_clock::now(); rtcCommitScene(sc);
  printf("build %.0f ms\n", std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  std::vector<float> tout(nr);
  auto single = [&](size_t a, size_t b) { RTCIntersectContext ctx; rtcInitIntersectContext(&ctx);
    for (size_t i = a; i < b; i++) { RTCRayHit rh; rh.ray.org_x = O[0]; rh.ray.org_y = O[1]; rh.ray.org_z = O[2];
      rh.ray.dir_x = D[3*i]; rh.ray.dir_y = D[3*i+1]; rh.ray.dir_z = D[3*i+2]; rh.ray.tnear = 0; rh.ray.tfar = INFINITY; rh.ray.mask = -1; rh.ray.flags = 0; rh.ray.time = 0;
      rh.hit.geomID = RTC_INVALID_GEOMETRY_ID; rtcIntersect1(sc, &ctx, &rh); tout[i] = rh.ray.tfar; } };
  auto packet = [&](size_t a, size_t b) { RTCIntersectContext ctx; rtcInitIntersectContext(&ctx); ctx.flags = RTC_INTERSECT_CONTEXT_FLAG_COHERENT;
    alignas(64) RTCRayHit16 rh; alignas(64) int valid[16]; for (int k = 0; k < 16; k++) valid[k] = -1;
    for (size_t i = a; i < b; i += 16) { for (int k = 0; k < 16; k++) { size_t j = i + k; rh.ray.org_x[k] = O[0]; rh.ray.org_y[k] = O[1]; rh.ray.org_z[k] = O[2];
        rh.ray.dir_x[k] = D[3*j]; rh.ray.dir_y[k] = D[3*j+1]; rh.ray.dir_z[k] = D[3*j+2]; rh.ray.tnear[k] = 0; rh.ray.tfar[k] = INFINITY; rh.ray.mask[k] = -1; rh.ray.flags[k] = 0; rh.ray.time[k] = 0; rh.hit.geomID[k] = RTC_INVALID_GEOMETRY_ID; }
      rtcIntersect16(valid, sc, &ctx, &rh); for (int k = 0; k < 16; k++) tout[i + k] = rh.ray.tfar[k]; } };
  for (int mode = 0; mode < 2; mode++) { std::vector<double> ts;
    for (int rep = 0; rep < 12; rep++) { auto s = std::chrono::steady_clock::now();
      size_t half = (nr / 2) / 16 * 16;
      std::thread th([&] { if (mode) packet(0, half); else single(0, half); }); if (mode) packet(half, nr); else single(half, nr); th.join();
      ts.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s).count()); }
    std::sort(ts.begin(), ts.end()); size_t hits = 0; for (float t : tout) hits += std::isfinite(t);
    printf("%s: median %.1f ms for %zu rays (2 threads), hits %zu\n", mode ? "rtcIntersect16 4x4 tiles" : "rtcIntersect1", ts[6], nr, hits); }
}
