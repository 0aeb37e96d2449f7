/* A fake NVML for tests: the functions devicemap's discovery calls (through nvml-wrapper),
 * with the real NVML types and struct layouts, answering from a file of key=value lines named
 * by DEVICEMAP_FAKE_NVML_CONFIG and read at nvmlInit_v2. Keys (N is the NVML index, M a MIG
 * slot):
 *   init=ok|driver_not_loaded|no_permission|unknown     driver=<version string>
 *   count=<GPUs>                                         log=<file each init/shutdown/memory read appends to>
 *   gpu.N.name  gpu.N.uuid  gpu.N.pci (busId)  gpu.N.total  gpu.N.used  gpu.N.used_step (added per read)
 *   gpu.N.reserved (set aside by the driver: counted in total, not in used nor free)
 *   gpu.N.cc=<major>.<minor>  gpu.N.handle=ok|no_permission|gpu_lost  gpu.N.memory=ok|not_supported
 *   gpu.N.mig=0|1|unsupported  gpu.N.mig_max=<slots>
 *   gpu.N.mig.M.uuid  gpu.N.mig.M.name  gpu.N.mig.M.total  gpu.N.mig.M.used   (slot M absent: NotFound)
 * Build with -DFAKE_NO_MEMORY_V2 or -DFAKE_NO_INIT_V2 to leave those symbols out.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_UNKNOWN = 999,
};

typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;

typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

#define MAX_GPUS 16
#define MAX_MIGS 8

typedef struct fake_device {
    int present, is_mig;
    char name[96], uuid[96], pci[32];
    unsigned long long total, reserved, used, used_step;
    int cc_major, cc_minor;
    nvmlReturn_t handle_error, memory_error;
    int mig_mode; /* 0 off, 1 on, -1 unsupported */
    unsigned int mig_max;
    struct fake_device *parent;
    struct fake_device *migs;
} fake_device;

static fake_device gpus[MAX_GPUS];
static fake_device migs[MAX_GPUS][MAX_MIGS];
static unsigned int gpu_count;
static int initialized;
static nvmlReturn_t init_result;
static char driver[80] = "550.54.15";
static char log_path[512];

static void log_line(const char *what) {
    if (!log_path[0]) return;
    FILE *f = fopen(log_path, "a");
    if (!f) return;
    fprintf(f, "%s\n", what);
    fclose(f);
}

static nvmlReturn_t error_named(const char *v) {
    if (!strcmp(v, "ok")) return NVML_SUCCESS;
    if (!strcmp(v, "driver_not_loaded")) return NVML_ERROR_DRIVER_NOT_LOADED;
    if (!strcmp(v, "no_permission")) return NVML_ERROR_NO_PERMISSION;
    if (!strcmp(v, "not_supported")) return NVML_ERROR_NOT_SUPPORTED;
    if (!strcmp(v, "gpu_lost")) return NVML_ERROR_GPU_IS_LOST;
    return NVML_ERROR_UNKNOWN;
}

static void set_field(fake_device *d, const char *field, const char *v) {
    d->present = 1;
    if (!strcmp(field, "name")) snprintf(d->name, sizeof d->name, "%s", v);
    else if (!strcmp(field, "uuid")) snprintf(d->uuid, sizeof d->uuid, "%s", v);
    else if (!strcmp(field, "pci")) snprintf(d->pci, sizeof d->pci, "%s", v);
    else if (!strcmp(field, "total")) d->total = strtoull(v, NULL, 10);
    else if (!strcmp(field, "reserved")) d->reserved = strtoull(v, NULL, 10);
    else if (!strcmp(field, "used")) d->used = strtoull(v, NULL, 10);
    else if (!strcmp(field, "used_step")) d->used_step = strtoull(v, NULL, 10);
    else if (!strcmp(field, "cc")) sscanf(v, "%d.%d", &d->cc_major, &d->cc_minor);
    else if (!strcmp(field, "handle")) d->handle_error = error_named(v);
    else if (!strcmp(field, "memory")) d->memory_error = error_named(v);
    else if (!strcmp(field, "mig")) d->mig_mode = !strcmp(v, "unsupported") ? -1 : atoi(v);
    else if (!strcmp(field, "mig_max")) d->mig_max = (unsigned)atoi(v);
}

static void load_config(void) {
    memset(gpus, 0, sizeof gpus);
    memset(migs, 0, sizeof migs);
    gpu_count = 0;
    init_result = NVML_SUCCESS;
    for (int g = 0; g < MAX_GPUS; g++) {
        gpus[g].migs = migs[g];
        gpus[g].cc_major = 8;
        for (int m = 0; m < MAX_MIGS; m++) {
            migs[g][m].is_mig = 1;
            migs[g][m].parent = &gpus[g];
        }
    }
    const char *path = getenv("DEVICEMAP_FAKE_NVML_CONFIG");
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        char *eq = strchr(line, '=');
        if (!eq) continue;
        *eq = 0;
        const char *key = line, *v = eq + 1;
        unsigned g, m;
        char field[64];
        if (!strcmp(key, "init")) init_result = error_named(v);
        else if (!strcmp(key, "driver")) snprintf(driver, sizeof driver, "%s", v);
        else if (!strcmp(key, "count")) gpu_count = (unsigned)atoi(v);
        else if (!strcmp(key, "log")) snprintf(log_path, sizeof log_path, "%s", v);
        else if (sscanf(key, "gpu.%u.mig.%u.%63s", &g, &m, field) == 3) {
            if (g < MAX_GPUS && m < MAX_MIGS) set_field(&migs[g][m], field, v);
        } else if (sscanf(key, "gpu.%u.%63s", &g, field) == 2) {
            if (g < MAX_GPUS) set_field(&gpus[g], field, v);
        }
    }
    fclose(f);
    if (gpu_count > MAX_GPUS) gpu_count = MAX_GPUS;
}

static int valid(const fake_device *d) {
    if (!d) return 0;
    if (d >= &gpus[0] && d < &gpus[MAX_GPUS]) return 1;
    return d >= &migs[0][0] && d < &migs[MAX_GPUS - 1][MAX_MIGS] && d->present;
}

#define CHECK_DEVICE(d)                                   \
    do {                                                  \
        if (!initialized) return NVML_ERROR_UNINITIALIZED; \
        if (!valid(d)) return NVML_ERROR_INVALID_ARGUMENT; \
    } while (0)

static nvmlReturn_t init(void) {
    load_config();
    log_line("init");
    if (init_result != NVML_SUCCESS) return init_result;
    initialized++;
    return NVML_SUCCESS;
}

#ifndef FAKE_NO_INIT_V2
nvmlReturn_t nvmlInit_v2(void) { return init(); }
#endif
nvmlReturn_t nvmlInitWithFlags(unsigned int flags) { (void)flags; return init(); }

nvmlReturn_t nvmlShutdown(void) {
    log_line("shutdown");
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    initialized--;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    default: return "Unknown Error";
    }
}

static nvmlReturn_t copy_string(char *out, unsigned int length, const char *s) {
    if (!out) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(s) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(out, s, strlen(s) + 1);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    return copy_string(version, length, driver);
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    *count = gpu_count;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, fake_device **device) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (index >= gpu_count || !device) return NVML_ERROR_INVALID_ARGUMENT;
    if (gpus[index].handle_error) return gpus[index].handle_error;
    *device = &gpus[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUUID(fake_device *d, char *uuid, unsigned int length) {
    CHECK_DEVICE(d);
    return copy_string(uuid, length, d->uuid);
}

nvmlReturn_t nvmlDeviceGetName(fake_device *d, char *name, unsigned int length) {
    CHECK_DEVICE(d);
    return copy_string(name, length, d->name);
}

#ifndef FAKE_NO_MEMORY_V2
nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(fake_device *d, nvmlMemory_v2_t *memory) {
    CHECK_DEVICE(d);
    if (!memory || memory->version != (sizeof(nvmlMemory_v2_t) | (2u << 24))) return NVML_ERROR_INVALID_ARGUMENT;
    if (d->memory_error) return d->memory_error;
    log_line("memory");
    memory->total = d->total;
    memory->reserved = d->reserved;
    memory->used = d->used;
    memory->free = d->total > d->reserved + d->used ? d->total - d->reserved - d->used : 0;
    d->used += d->used_step;
    return NVML_SUCCESS;
}
#endif

nvmlReturn_t nvmlDeviceGetPciInfo_v3(fake_device *d, nvmlPciInfo_t *pci) {
    CHECK_DEVICE(d);
    if (!pci) return NVML_ERROR_INVALID_ARGUMENT;
    const fake_device *physical = d->is_mig ? d->parent : d;
    memset(pci, 0, sizeof *pci);
    snprintf(pci->busId, sizeof pci->busId, "%s", physical->pci);
    sscanf(physical->pci, "%x:%x:%x", &pci->domain, &pci->bus, &pci->device);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCudaComputeCapability(fake_device *d, int *major, int *minor) {
    CHECK_DEVICE(d);
    const fake_device *physical = d->is_mig ? d->parent : d;
    *major = physical->cc_major;
    *minor = physical->cc_minor;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigMode(fake_device *d, unsigned int *current, unsigned int *pending) {
    CHECK_DEVICE(d);
    if (d->is_mig || d->mig_mode < 0) return NVML_ERROR_NOT_SUPPORTED;
    *current = *pending = (unsigned)d->mig_mode;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(fake_device *d, unsigned int *count) {
    CHECK_DEVICE(d);
    if (d->is_mig || d->mig_mode < 0) return NVML_ERROR_NOT_SUPPORTED;
    *count = d->mig_max;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(fake_device *d, unsigned int index, fake_device **mig) {
    CHECK_DEVICE(d);
    if (d->is_mig || d->mig_mode != 1) return NVML_ERROR_NOT_SUPPORTED;
    if (index >= d->mig_max || index >= MAX_MIGS || !mig) return NVML_ERROR_INVALID_ARGUMENT;
    if (!d->migs[index].present) return NVML_ERROR_NOT_FOUND;
    *mig = &d->migs[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceIsMigDeviceHandle(fake_device *d, unsigned int *is_mig) {
    CHECK_DEVICE(d);
    *is_mig = (unsigned)d->is_mig;
    return NVML_SUCCESS;
}
