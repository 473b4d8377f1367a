/* The call-site walk of pytest_noplusone.capture, in C (CPython 3.11 and 3.12).
 *
 * For every statement the listener needs the user's frames that ran it: the innermost
 * CALL_SITE_DEPTH frames that are not infrastructure, through parent greenlets (an
 * AsyncSession runs its statements in a child greenlet whose stack ends at SQLAlchemy's
 * greenlet_spawn). In Python every frame visited costs a frame object (CPython 3.11 makes them
 * on demand) and a dozen bytecodes. Here the interpreter's own frame records are read where
 * they lie, which is what sys._getframe and PyFrame_GetBack do internally.
 *
 * The classification of files stays in Python (capture._classify fills capture._kinds); this
 * module only reads that dict, and calls the classifier for a file it has not seen. Call sites
 * are cached by a hash of their code objects and offsets, in a dict that capture fills (each
 * entry is checked against the frames, so a hash collision is only a miss). The pure-Python
 * walk (capture._offsets) remains the reference and the fallback: both find the same frames,
 * which the test suite checks.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if PY_VERSION_HEX < 0x030B0000 || PY_VERSION_HEX >= 0x030D0000
#error "pytest_noplusone._walk supports CPython 3.11 and 3.12; other versions use the Python walk"
#endif

#define Py_BUILD_CORE 1
#include "internal/pycore_frame.h"
#undef Py_BUILD_CORE

#define KIND_USER 0
#define KIND_BOUNDARY 2
#define MAX_DEPTH 16

static PyObject *kinds;      /* dict: co_filename -> kind (capture._kinds) */
static PyObject *classify;   /* capture._classify(filename) -> kind; stores it in kinds */
static PyObject *getcurrent; /* greenlet.getcurrent */
static PyObject *sites;      /* dict: hash -> (site, codes, offsets) (capture._sites_by_hash) */
static int depth = 4;        /* user frames per call site */
static PyTypeObject *greenlet_type; /* greenlet.greenlet */
static PyObject *parent_descr;       /* its ``parent`` and ``gr_frame`` descriptors, called */
static PyObject *gr_frame_descr;     /* directly: no attribute lookup per statement */

/* Kinds by co_filename object, in front of the dict: a slot holds a reference to its file name,
 * so a cached pointer always denotes the same string. A file's kind never changes. */
#define CACHE_SIZE 256
static struct {
    PyObject *filename;
    int kind;
} cache[CACHE_SIZE];

static void
clear_cache(void)
{
    for (int i = 0; i < CACHE_SIZE; i++) {
        Py_CLEAR(cache[i].filename);
    }
}

typedef struct {
    PyCodeObject *code; /* borrowed: alive while its frame is on a (suspended) stack */
    int lasti;          /* in bytes, as frame.f_lasti */
} Found;

/* The kind of a code object's file, or -1 with an exception set. */
static int
kind_of(PyCodeObject *code)
{
    PyObject *filename = code->co_filename;
    size_t slot = ((size_t)(uintptr_t)filename >> 4) % CACHE_SIZE;
    if (cache[slot].filename == filename) {
        return cache[slot].kind;
    }
    long kind;
    PyObject *value = PyDict_GetItemWithError(kinds, filename); /* borrowed */
    if (value != NULL) {
        kind = PyLong_AsLong(value);
    }
    else {
        if (PyErr_Occurred()) {
            return -1;
        }
        value = PyObject_CallOneArg(classify, filename);
        if (value == NULL) {
            return -1;
        }
        kind = PyLong_AsLong(value);
        Py_DECREF(value);
    }
    if (kind == -1 && PyErr_Occurred()) {
        return -1;
    }
    Py_INCREF(filename);
    Py_XSETREF(cache[slot].filename, filename);
    cache[slot].kind = (int)kind;
    return (int)kind;
}

/* ``obj.parent`` or ``obj.gr_frame`` of a greenlet (a new reference, NULL on error). */
static PyObject *
greenlet_get(PyObject *obj, PyObject *descr, const char *name)
{
    if (PyObject_TypeCheck(obj, greenlet_type)) {
        return Py_TYPE(descr)->tp_descr_get(descr, obj, (PyObject *)Py_TYPE(obj));
    }
    return PyObject_GetAttrString(obj, name);
}

/* Collect up to `depth` user frames, from the caller of the C function outwards. The frames
 * of parent greenlets are read through their top frame object (greenlet keeps one for each
 * suspended greenlet); `*hold` receives the references that keep those stacks alive until the
 * caller has used `found`. Returns the number found, or -1 with an exception set. */
static int
walk(Found *found, PyObject **hold)
{
    if (kinds == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "pytest_noplusone._walk.configure() was not called");
        *hold = NULL;
        return -1;
    }
    PyThreadState *tstate = PyThreadState_Get();
    _PyInterpreterFrame *frame = tstate->cframe->current_frame;
    PyObject *current = NULL; /* owned: the greenlet whose stack ``frame`` belongs to */
    int count = 0;
    *hold = NULL;
    for (;;) {
        for (; frame != NULL; frame = frame->previous) {
            if (_PyFrame_IsIncomplete(frame)) {
                continue;
            }
            int kind = kind_of(frame->f_code);
            if (kind < 0) {
                goto error;
            }
            if (kind == KIND_USER) {
                found[count].code = frame->f_code;
                found[count].lasti =
                    _PyInterpreterFrame_LASTI(frame) * (int)sizeof(_Py_CODEUNIT);
                if (++count >= depth) {
                    goto done;
                }
            }
            else if (kind == KIND_BOUNDARY) {
                goto done;
            }
        }
        /* This greenlet's stack ends here: the walk goes on in its parent. */
        if (current == NULL) {
            current = PyObject_CallNoArgs(getcurrent);
            if (current == NULL) {
                goto error;
            }
        }
        PyObject *parent = greenlet_get(current, parent_descr, "parent");
        Py_DECREF(current);
        current = parent;
        if (parent == NULL) {
            goto error;
        }
        if (parent == Py_None) {
            goto done;
        }
        PyObject *top = greenlet_get(parent, gr_frame_descr, "gr_frame");
        if (top == NULL) {
            goto error;
        }
        if (top == Py_None || !PyFrame_Check(top)) {
            Py_DECREF(top);
            goto done;
        }
        /* The parent's frames stay where they are while it is suspended; keep its top frame
         * object (and so the greenlet's saved stack) referenced while they are read. */
        PyObject *pair = PyTuple_Pack(2, top, *hold ? *hold : Py_None);
        Py_DECREF(top);
        if (pair == NULL) {
            goto error;
        }
        Py_XSETREF(*hold, pair);
        frame = ((PyFrameObject *)PyTuple_GET_ITEM(pair, 0))->f_frame;
    }
done:
    Py_XDECREF(current);
    return count;
error:
    Py_XDECREF(current);
    Py_CLEAR(*hold);
    return -1;
}

/* A call site's hash: the code objects and offsets of its user frames. */
static size_t
hash_of(const Found *found, int count)
{
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t)count;
    for (int i = 0; i < count; i++) {
        h ^= (uint64_t)(uintptr_t)found[i].code;
        h *= 0xff51afd7ed558ccdULL;
        h ^= (uint64_t)(uint32_t)found[i].lasti;
        h *= 0xc4ceb9fe1a85ec53ULL;
        h ^= h >> 33;
    }
    return (size_t)h;
}

/* Whether a cache entry (site, codes, offsets) is the one of these frames (a hash can
 * collide; an entry keeps its code objects alive, so their addresses are still theirs). */
static int
matches(PyObject *entry, const Found *found, int count)
{
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 3) {
        return 0;
    }
    PyObject *codes = PyTuple_GET_ITEM(entry, 1);
    PyObject *lastis = PyTuple_GET_ITEM(entry, 2);
    if (!PyTuple_CheckExact(codes) || !PyTuple_CheckExact(lastis) ||
        PyTuple_GET_SIZE(codes) != count || PyTuple_GET_SIZE(lastis) != count) {
        return 0;
    }
    for (int i = 0; i < count; i++) {
        if (PyTuple_GET_ITEM(codes, i) != (PyObject *)found[i].code) {
            return 0;
        }
        long lasti = PyLong_AsLong(PyTuple_GET_ITEM(lastis, i));
        if (lasti == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        if (lasti != found[i].lasti) {
            return 0;
        }
    }
    return 1;
}

/* The last entries found in the sites dict, by hash, in front of it: a hit costs no int
 * object and no dict lookup. A slot holds a reference to its entry; capture clears them
 * (forget) whenever it clears the dict, so a slot never returns a site that is no longer the
 * interned one. */
#define SITE_SLOTS 64
static struct {
    size_t hash;
    PyObject *entry; /* (site, codes, offsets) */
} site_slots[SITE_SLOTS];

static void
clear_site_slots(void)
{
    for (int i = 0; i < SITE_SLOTS; i++) {
        Py_CLEAR(site_slots[i].entry);
    }
}

/* The caller's site from the sites cache: a new reference, None on a miss, NULL on error. */
static PyObject *
cached_site(void)
{
    Found found[MAX_DEPTH];
    PyObject *hold;
    int count = walk(found, &hold);
    if (count < 0) {
        return NULL;
    }
    size_t hash = hash_of(found, count);
    size_t slot = (hash >> 17) % SITE_SLOTS;
    PyObject *entry = site_slots[slot].entry;
    if (entry != NULL && site_slots[slot].hash == hash && matches(entry, found, count)) {
        Py_XDECREF(hold);
        return Py_NewRef(PyTuple_GET_ITEM(entry, 0));
    }
    PyObject *result = NULL;
    PyObject *key = PyLong_FromSize_t(hash);
    if (key != NULL) {
        entry = PyDict_GetItemWithError(sites, key); /* borrowed */
        if (entry != NULL && matches(entry, found, count)) {
            Py_XSETREF(site_slots[slot].entry, Py_NewRef(entry));
            site_slots[slot].hash = hash;
            result = Py_NewRef(PyTuple_GET_ITEM(entry, 0));
        }
        else if (!PyErr_Occurred()) {
            result = Py_NewRef(Py_None);
        }
        Py_DECREF(key);
    }
    Py_XDECREF(hold);
    return result;
}

static void forget_last(void);

static PyObject *
forget(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    clear_site_slots();
    forget_last();
    Py_RETURN_NONE;
}

static PyObject *
site(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return cached_site();
}

static PyObject *
locate(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    Found found[MAX_DEPTH];
    PyObject *hold;
    int count = walk(found, &hold);
    if (count < 0) {
        return NULL;
    }
    PyObject *frames = PyTuple_New(count);
    for (int i = 0; frames != NULL && i < count; i++) {
        int line = PyCode_Addr2Line(found[i].code, found[i].lasti);
        PyObject *frame = Py_BuildValue("(Oii)", (PyObject *)found[i].code, found[i].lasti, line);
        if (frame == NULL) {
            Py_CLEAR(frames);
            break;
        }
        PyTuple_SET_ITEM(frames, i, frame);
    }
    PyObject *result = NULL;
    PyObject *key = frames != NULL ? PyLong_FromSize_t(hash_of(found, count)) : NULL;
    if (key != NULL) {
        result = PyTuple_Pack(2, key, frames);
        Py_DECREF(key);
    }
    Py_XDECREF(frames);
    Py_XDECREF(hold);
    return result;
}

/* ---- The listener (capture._capture in C) ----------------------------------------------
 *
 * SQLAlchemy calls the do_execute listener for every statement, so its cost is the plugin's
 * cost: in Python, the listener's forty-odd bytecodes cost more than the walk. This is the
 * same function, statement for statement, reading the same state of the capture module (its
 * ``_targets``, read from the module's namespace on each call, and its shapes cache); what is
 * rare (a new statement, a new call site, an ORM relationship load, a full batch) calls back
 * into the module's Python functions. capture._capture remains the reference and the fallback.
 */

static PyObject *namespace;   /* capture's module dict: ``_targets`` is read from it */
static PyObject *shapes;      /* capture._shapes: the statement's key -> fingerprint ("": not counted) */
static PyObject *new_shape;   /* capture._shape(key) -> the same, cached */
static PyObject *intern_site; /* capture._c_intern() -> the caller's site, cached */
static PyObject *loader;      /* capture._loader(statement, load options) -> loader or None */
static PyObject *errors;      /* capture._listener_errors */

static PyObject *s_targets, *s_root_connection, *s_allow_autobegin, *s_compiled, *s_string,
    *s_execution_options, *s_load_options, *s_invoked_statement, *s_engine, *s_fold;

/* What the listener learned about one statement: the parts of its record (the arguments of
 * capture.CapturedQuery), of which the statement and parameters are borrowed from the caller. */
typedef struct {
    PyObject *statement, *parameters;
    int executemany;
    PyObject *fingerprint, *engine, *site, *load; /* owned */
} Record;

static void
release(Record *record)
{
    Py_CLEAR(record->fingerprint);
    Py_CLEAR(record->engine);
    Py_CLEAR(record->site);
    Py_CLEAR(record->load);
}

/* The connection of the last statement, by a weak reference, with what the listener reads
 * from it: whether it may autobegin (false only for the dialect's first-connect queries) and
 * its engine (borrowed: the connection, alive while the reference is, holds it). Both are set
 * once, in Connection.__init__. Loops run on one connection: two attribute reads saved. */
static PyObject *last_connection;
static PyObject *last_engine;
static int last_allowed;
/* The compiled statement of the last statement, by a weak reference, with its fingerprint
 * (from capture._shapes: "" when it is not counted). forget() drops it when what is counted
 * changes (capture.set_ignore). */
static PyObject *last_compiled;
static PyObject *last_fingerprint;

static void
forget_last(void)
{
    Py_CLEAR(last_connection);
    last_engine = NULL;
    Py_CLEAR(last_compiled);
    Py_CLEAR(last_fingerprint);
}

/* The fingerprint of a statement's shape key (its compiled string, or the statement), from
 * capture._shapes or made by capture._shape: a new reference, NULL on error. */
static PyObject *
fingerprint_of(PyObject *key)
{
    PyObject *fingerprint = PyDict_GetItemWithError(shapes, key);
    if (fingerprint != NULL) {
        return Py_NewRef(fingerprint);
    }
    return PyErr_Occurred() ? NULL : PyObject_CallOneArg(new_shape, key);
}

/* Fill ``record`` for the statement: 1 when it is counted, 0 when it is not (the dialect's
 * first-connect queries, transaction control, ignored patterns), -1 with an exception set.
 * The caller releases the record in every case. */
static int
learn(PyObject *context, Record *record)
{
    int status = -1;
    PyObject *connection = PyObject_GetAttr(context, s_root_connection);
    if (connection == NULL) {
        return -1;
    }
    int allowed;
    if (last_connection != NULL && PyWeakref_GET_OBJECT(last_connection) == connection) {
        allowed = last_allowed;
        record->engine = Py_NewRef(last_engine);
    }
    else {
        PyObject *value = PyObject_GetAttr(connection, s_allow_autobegin);
        allowed = value == NULL ? -1 : PyObject_IsTrue(value);
        Py_XDECREF(value);
        if (allowed >= 0) {
            record->engine = PyObject_GetAttr(connection, s_engine);
            allowed = record->engine == NULL ? -1 : allowed;
        }
        if (allowed >= 0) {
            PyObject *reference = PyWeakref_NewRef(connection, NULL);
            if (reference == NULL) {
                PyErr_Clear(); /* not weakly referenceable: read it every time */
            }
            Py_XSETREF(last_connection, reference);
            last_engine = record->engine;
            last_allowed = allowed;
        }
    }
    if (allowed <= 0) {
        status = allowed; /* 0: the dialect's first-connect initialisation */
        goto done;
    }
    /* The compiled string is one object per compiled statement (its hash is cached). */
    PyObject *compiled = PyObject_GetAttr(context, s_compiled);
    if (compiled == NULL) {
        goto done;
    }
    PyObject *fingerprint;
    if (compiled == Py_None) {
        fingerprint = fingerprint_of(record->statement);
    }
    else if (last_compiled != NULL && PyWeakref_GET_OBJECT(last_compiled) == compiled) {
        fingerprint = Py_NewRef(last_fingerprint);
    }
    else {
        PyObject *key = PyObject_GetAttr(compiled, s_string);
        fingerprint = key == NULL ? NULL : fingerprint_of(key);
        Py_XDECREF(key);
        if (fingerprint != NULL) {
            PyObject *reference = PyWeakref_NewRef(compiled, NULL);
            if (reference == NULL) {
                PyErr_Clear(); /* not weakly referenceable: look it up every time */
            }
            Py_XSETREF(last_compiled, reference);
            Py_XSETREF(last_fingerprint, Py_NewRef(fingerprint));
        }
    }
    Py_DECREF(compiled);
    record->fingerprint = fingerprint;
    if (fingerprint == NULL) {
        goto done;
    }
    if (!PyUnicode_Check(fingerprint)) {
        PyErr_SetString(PyExc_TypeError, "capture._shapes holds a fingerprint that is not a str");
        goto done;
    }
    if (PyUnicode_GET_LENGTH(fingerprint) == 0) {
        status = 0;
        goto done;
    }
    record->site = cached_site();
    if (record->site == Py_None) {
        Py_SETREF(record->site, PyObject_CallNoArgs(intern_site));
    }
    if (record->site == NULL) {
        goto done;
    }
    PyObject *options = PyObject_GetAttr(context, s_execution_options);
    if (options == NULL) {
        goto done;
    }
    /* One membership test for the statements that are not ORM loads. */
    int orm = PySequence_Contains(options, s_load_options);
    if (orm > 0) {
        PyObject *invoked = PyObject_GetAttr(context, s_invoked_statement);
        PyObject *load_options = PyObject_GetItem(options, s_load_options);
        if (invoked != NULL && load_options != NULL) {
            PyObject *pair[2] = {invoked, load_options};
            record->load = PyObject_Vectorcall(loader, pair, 2, NULL);
        }
        Py_XDECREF(invoked);
        Py_XDECREF(load_options);
    }
    else if (orm == 0) {
        record->load = Py_NewRef(Py_None);
    }
    Py_DECREF(options);
    status = record->load == NULL ? -1 : 1;
done:
    Py_DECREF(connection);
    return status;
}

/* A window's count cell: 8 bytes holding a native long long (a bytearray made by the fold). */
static int
cell_check(PyObject *cell)
{
    if (!PyByteArray_CheckExact(cell) || PyByteArray_GET_SIZE(cell) != sizeof(long long)) {
        PyErr_SetString(PyExc_TypeError, "a window's settled count is not an 8-byte cell");
        return -1;
    }
    return 0;
}

/* Count a statement in a window's settled shapes (site -> fingerprint -> count cell): the
 * shapes that are done sampling, in a window that keeps no more statements, where only the
 * count of a statement matters. 1 when counted there, 0 when its shape is not settled, -1 on
 * error. Only the fold adds entries; under the GIL this increment is one step for any thread. */
static int
bump(PyObject *settled, PyObject *site_, PyObject *fingerprint)
{
    if (!PyDict_CheckExact(settled)) {
        PyErr_SetString(PyExc_TypeError, "a window's settled shapes are not a dict");
        return -1;
    }
    if (PyDict_GET_SIZE(settled) == 0) {
        return 0;
    }
    PyObject *inner = PyDict_GetItemWithError(settled, site_); /* borrowed */
    if (inner == NULL || !PyDict_CheckExact(inner)) {
        if (inner != NULL) {
            PyErr_SetString(PyExc_TypeError, "a window's settled shapes are not a dict");
        }
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *cell = PyDict_GetItemWithError(inner, fingerprint); /* borrowed */
    if (cell == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    if (cell_check(cell) < 0) {
        return -1;
    }
    long long count;
    memcpy(&count, PyByteArray_AS_STRING(cell), sizeof count);
    count++;
    memcpy(PyByteArray_AS_STRING(cell), &count, sizeof count);
    return 1;
}

/* Deliver the statement to each open window that takes this engine's statements: counted in
 * place when its shape is settled there, else recorded (the record tuple is made once, when a
 * window needs it) and appended to the window's pending list, which is folded when full (a
 * window's memory stays O(shapes)). */
static int
deliver(PyObject *targets, Record *record)
{
    PyObject *raw = NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(targets); i++) {
        PyObject *target = PyTuple_GET_ITEM(targets, i);
        if (!PyTuple_CheckExact(target) || PyTuple_GET_SIZE(target) != 5) {
            PyErr_SetString(PyExc_TypeError, "capture._targets holds a malformed window");
            goto error;
        }
        PyObject *only = PyTuple_GET_ITEM(target, 0);
        PyObject *pending = PyTuple_GET_ITEM(target, 1);
        if (only != Py_None && only != record->engine) {
            continue;
        }
        int counted = bump(PyTuple_GET_ITEM(target, 3), record->site, record->fingerprint);
        if (counted < 0) {
            goto error;
        }
        if (counted) {
            continue;
        }
        PyObject *fold_at = PyTuple_GET_ITEM(target, 4);
        if (!PyList_CheckExact(pending) || !PyList_CheckExact(fold_at) ||
            PyList_GET_SIZE(fold_at) != 1) {
            PyErr_SetString(PyExc_TypeError, "capture._targets holds a malformed window");
            goto error;
        }
        if (raw == NULL) {
            raw = PyTuple_Pack(7, record->statement, record->parameters,
                               record->executemany ? Py_True : Py_False, record->fingerprint,
                               record->engine, record->site, record->load);
            if (raw == NULL) {
                goto error;
            }
        }
        if (PyList_Append(pending, raw) < 0) {
            goto error;
        }
        Py_ssize_t limit = PyLong_AsSsize_t(PyList_GET_ITEM(fold_at, 0));
        if (limit == -1 && PyErr_Occurred()) {
            goto error;
        }
        if (PyList_GET_SIZE(pending) >= limit) {
            PyObject *folded = PyObject_CallMethodNoArgs(PyTuple_GET_ITEM(target, 2), s_fold);
            if (folded == NULL) {
                goto error;
            }
            Py_DECREF(folded);
        }
    }
    Py_XDECREF(raw);
    return 0;
error:
    Py_XDECREF(raw);
    return -1;
}

/* drain(settled, clear) -> [(fingerprint, site, count), ...]: the counts made in place since
 * the last drain, each reset to 0; with ``clear``, the window's settled shapes are emptied
 * first (the counts are read from a copy), so that its statements are recorded again.
 *
 * No statement is counted twice or lost, though an allocation here can let another thread run
 * the listener: each count is read and reset with nothing in between, and the listener only
 * increments counts (the fold, which adds entries, holds the log's lock, as does this). */
static PyObject *
drain(PyObject *module, PyObject *args)
{
    PyObject *settled;
    int clear;
    if (!PyArg_ParseTuple(args, "O!p:drain", &PyDict_Type, &settled, &clear)) {
        return NULL;
    }
    PyObject *result = PyList_New(0);
    PyObject *source = clear ? PyDict_Copy(settled) : Py_NewRef(settled);
    if (result == NULL || source == NULL) {
        goto error;
    }
    if (clear) {
        PyDict_Clear(settled);
    }
    Py_ssize_t position = 0;
    PyObject *site_, *inner;
    while (PyDict_Next(source, &position, &site_, &inner)) {
        if (!PyDict_Check(inner)) {
            PyErr_SetString(PyExc_TypeError, "a window's settled shapes are not a dict");
            goto error;
        }
        Py_ssize_t at = 0;
        PyObject *fingerprint, *cell;
        while (PyDict_Next(inner, &at, &fingerprint, &cell)) {
            if (cell_check(cell) < 0) {
                goto error;
            }
            long long count;
            memcpy(&count, PyByteArray_AS_STRING(cell), sizeof count);
            if (count == 0) {
                continue;
            }
            memset(PyByteArray_AS_STRING(cell), 0, sizeof count);
            PyObject *number = PyLong_FromLongLong(count);
            PyObject *entry = number == NULL ? NULL : PyTuple_Pack(3, fingerprint, site_, number);
            Py_XDECREF(number);
            if (entry == NULL || PyList_Append(result, entry) < 0) {
                Py_XDECREF(entry);
                goto error;
            }
            Py_DECREF(entry);
        }
    }
    Py_DECREF(source);
    return result;
error:
    Py_XDECREF(source);
    Py_XDECREF(result);
    return NULL;
}

/* capture(cursor, statement, parameters, context, executemany=False): the do_execute
 * listener. Returns None (the statement still runs); never raises an Exception into the
 * user's query: one is kept in capture._listener_errors (the first ten) instead. */
static PyObject *
capture(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 && nargs != 5) {
        PyErr_Format(PyExc_TypeError, "capture() takes 4 or 5 arguments (%zd given)", nargs);
        return NULL;
    }
    if (namespace == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "pytest_noplusone._walk.bind() was not called");
        return NULL;
    }
    PyObject *targets = PyDict_GetItemWithError(namespace, s_targets); /* borrowed */
    if (targets == NULL || !PyTuple_CheckExact(targets) || PyTuple_GET_SIZE(targets) == 0) {
        if (targets == NULL && PyErr_Occurred()) {
            goto error;
        }
        Py_RETURN_NONE;
    }
    /* Held: the module may replace its _targets while Python code runs below. */
    Py_INCREF(targets);
    int executemany = 0;
    if (nargs == 5) {
        executemany = PyObject_IsTrue(args[4]);
    }
    int failed = executemany < 0;
    if (!failed) {
        Record record = {args[1], args[2], executemany, NULL, NULL, NULL, NULL};
        int counted = learn(args[3], &record);
        failed = counted < 0 || (counted > 0 && deliver(targets, &record) < 0);
        release(&record);
    }
    Py_DECREF(targets);
    if (!failed) {
        Py_RETURN_NONE;
    }
error:
    /* A guest in the user's query: an Exception is kept, not raised (as in Python). */
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return NULL;
    }
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL && value != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    int kept = 0;
    if (value != NULL && PyList_GET_SIZE(errors) < 10) {
        kept = PyList_Append(errors, value);
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
    if (kept < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
bind(PyObject *module, PyObject *args)
{
    PyObject *new_namespace, *new_shapes, *new_shape_fn, *new_intern, *new_loader, *new_errors;
    if (!PyArg_ParseTuple(args, "O!O!OOOO!:bind", &PyDict_Type, &new_namespace, &PyDict_Type,
                          &new_shapes, &new_shape_fn, &new_intern, &new_loader, &PyList_Type,
                          &new_errors)) {
        return NULL;
    }
    if (s_targets == NULL) {
        struct {
            PyObject **name;
            const char *text;
        } names[] = {
            {&s_targets, "_targets"},
            {&s_root_connection, "root_connection"},
            {&s_allow_autobegin, "_allow_autobegin"},
            {&s_compiled, "compiled"},
            {&s_string, "string"},
            {&s_execution_options, "execution_options"},
            {&s_load_options, "_sa_orm_load_options"},
            {&s_invoked_statement, "invoked_statement"},
            {&s_engine, "engine"},
            {&s_fold, "_fold"},
        };
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            *names[i].name = PyUnicode_InternFromString(names[i].text);
            if (*names[i].name == NULL) {
                return NULL;
            }
        }
    }
    Py_XSETREF(namespace, Py_NewRef(new_namespace));
    Py_XSETREF(shapes, Py_NewRef(new_shapes));
    Py_XSETREF(new_shape, Py_NewRef(new_shape_fn));
    Py_XSETREF(intern_site, Py_NewRef(new_intern));
    Py_XSETREF(loader, Py_NewRef(new_loader));
    Py_XSETREF(errors, Py_NewRef(new_errors));
    Py_RETURN_NONE;
}

static PyObject *
configure(PyObject *module, PyObject *args)
{
    PyObject *new_kinds, *new_classify, *new_getcurrent, *new_type, *new_sites;
    int new_depth;
    if (!PyArg_ParseTuple(args, "O!OOO!iO!:configure", &PyDict_Type, &new_kinds, &new_classify,
                          &new_getcurrent, &PyType_Type, &new_type, &new_depth, &PyDict_Type,
                          &new_sites)) {
        return NULL;
    }
    if (new_depth < 1 || new_depth > MAX_DEPTH) {
        PyErr_Format(PyExc_ValueError, "depth must be between 1 and %d", MAX_DEPTH);
        return NULL;
    }
    PyObject *new_parent = PyObject_GetAttrString(new_type, "parent");
    PyObject *new_gr_frame = PyObject_GetAttrString(new_type, "gr_frame");
    if (new_parent == NULL || new_gr_frame == NULL) {
        Py_XDECREF(new_parent);
        Py_XDECREF(new_gr_frame);
        return NULL;
    }
    if (Py_TYPE(new_parent)->tp_descr_get == NULL || Py_TYPE(new_gr_frame)->tp_descr_get == NULL) {
        Py_DECREF(new_parent);
        Py_DECREF(new_gr_frame);
        PyErr_SetString(PyExc_TypeError, "greenlet's parent and gr_frame are not descriptors");
        return NULL;
    }
    Py_INCREF(new_kinds);
    Py_INCREF(new_classify);
    Py_INCREF(new_getcurrent);
    Py_INCREF(new_type);
    Py_INCREF(new_sites);
    Py_XSETREF(sites, new_sites);
    Py_XSETREF(kinds, new_kinds);
    Py_XSETREF(classify, new_classify);
    Py_XSETREF(getcurrent, new_getcurrent);
    Py_XSETREF(greenlet_type, (PyTypeObject *)new_type);
    Py_XSETREF(parent_descr, new_parent);
    Py_XSETREF(gr_frame_descr, new_gr_frame);
    depth = new_depth;
    clear_cache();
    clear_site_slots();
    Py_RETURN_NONE;
}

/* hook(original, name, kind): a replacement for a dialect class's ``do_execute`` (kind 0),
 * ``do_executemany`` (1) or ``do_execute_no_params`` (2) that records the statement (as the
 * listener does) and then calls ``original``. Set in the class, it is a method descriptor:
 * ``self.dialect.do_execute(...)`` calls it with the dialect first and no bound method made.
 *
 * Only the hook the dialect's own call reaches first records: a hooked override that calls
 * ``super()`` reaches a second hook, which finds that another hook comes first in the
 * dialect's class's MRO and only passes the call on (one record per round trip). A hook that
 * finds no hook at all in the MRO records: something set over it (another tool's wrapper)
 * still calls it. The answer is cached per class and version tag (a changed class gets a new
 * tag). ``original`` is called as the class attribute it was: a function with the dialect, a
 * staticmethod, classmethod or other descriptor bound through its ``__get__``. */
typedef struct {
    PyObject_HEAD
    PyObject *original;
    PyObject *name;
    int kind;
    PyTypeObject *seen_type; /* borrowed, checked with its version tag */
    unsigned int seen_tag;
    int seen_first;
    vectorcallfunc vectorcall;
} Hook;

static PyObject *empty_tuple;

static int
first_hook(Hook *self, PyTypeObject *type)
{
    if (type == self->seen_type && type->tp_version_tag == self->seen_tag && self->seen_tag != 0 &&
        PyType_HasFeature(type, Py_TPFLAGS_VALID_VERSION_TAG)) {
        return self->seen_first;
    }
    PyObject *mro = type->tp_mro;
    int first = 1; /* no hook in the MRO: something set over this one still calls it */
    if (mro != NULL && PyTuple_Check(mro)) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); i++) {
            PyObject *base = PyTuple_GET_ITEM(mro, i);
            PyObject *dict = ((PyTypeObject *)base)->tp_dict;
            PyObject *found = dict == NULL ? NULL : PyDict_GetItemWithError(dict, self->name);
            if (found == NULL) {
                if (PyErr_Occurred()) {
                    return -1;
                }
                continue;
            }
            if (Py_IS_TYPE(found, Py_TYPE(self))) {
                first = found == (PyObject *)self;
                break;
            }
        }
    }
    /* _PyType_Lookup gives the class a valid version tag, if it can have one. */
    (void)_PyType_Lookup(type, self->name);
    if (PyType_HasFeature(type, Py_TPFLAGS_VALID_VERSION_TAG)) {
        self->seen_type = type;
        self->seen_tag = type->tp_version_tag;
        self->seen_first = first;
    }
    return first;
}

static PyObject *capture(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

static PyObject *
hook_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Hook *self = (Hook *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames == NULL && nargs == (self->kind == 2 ? 4 : 5)) {
        int first = first_hook(self, Py_TYPE(args[0]));
        if (first < 0) {
            return NULL;
        }
        if (first) {
            PyObject *recorded;
            if (self->kind == 0) {
                recorded = capture(NULL, args + 1, 4);
            }
            else if (self->kind == 1) {
                PyObject *many[5] = {args[1], args[2], args[3], args[4], Py_True};
                recorded = capture(NULL, many, 5);
            }
            else {
                PyObject *none[4] = {args[1], args[2], empty_tuple, args[3]};
                recorded = capture(NULL, none, 4);
            }
            if (recorded == NULL) {
                return NULL;
            }
            Py_DECREF(recorded);
        }
    }
    PyObject *original = self->original;
    if (nargs == 0 || PyFunction_Check(original)) {
        return PyObject_Vectorcall(original, args, nargsf, kwnames);
    }
    descrgetfunc get = Py_TYPE(original)->tp_descr_get;
    if (get == NULL) { /* a plain callable in the class: called without the dialect */
        return PyObject_Vectorcall(original, args + 1, nargs - 1, kwnames);
    }
    PyObject *bound = get(original, args[0], (PyObject *)Py_TYPE(args[0]));
    if (bound == NULL) {
        return NULL;
    }
    PyObject *result = PyObject_Vectorcall(bound, args + 1, nargs - 1, kwnames);
    Py_DECREF(bound);
    return result;
}

static PyObject *
hook_get(PyObject *self, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None) {
        return Py_NewRef(self);
    }
    return PyMethod_New(self, obj);
}

static int
hook_traverse(Hook *self, visitproc visit, void *arg)
{
    Py_VISIT(self->original);
    return 0;
}

static void
hook_dealloc(Hook *self)
{
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->original);
    Py_CLEAR(self->name);
    PyObject_GC_Del(self);
}

static PyObject *
hook_original(Hook *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->original);
}

static PyObject *
hook_repr(Hook *self)
{
    return PyUnicode_FromFormat("<pytest_noplusone hook of %R>", self->original);
}

static PyGetSetDef hook_getset[] = {
    {"original", (getter)hook_original, NULL, "The function this hook replaced.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject HookType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pytest_noplusone._walk.Hook",
    .tp_basicsize = sizeof(Hook),
    .tp_dealloc = (destructor)hook_dealloc,
    .tp_vectorcall_offset = offsetof(Hook, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_repr = (reprfunc)hook_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
                Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_doc = "A dialect method replaced by one that records its statement first.",
    .tp_traverse = (traverseproc)hook_traverse,
    .tp_getset = hook_getset,
    .tp_descr_get = hook_get,
};

static PyObject *
hook(PyObject *module, PyObject *args)
{
    PyObject *original, *name;
    int kind;
    if (!PyArg_ParseTuple(args, "OUi:hook", &original, &name, &kind)) {
        return NULL;
    }
    if (kind < 0 || kind > 2) {
        PyErr_SetString(PyExc_ValueError, "hook(original, name, kind): kind is 0, 1 or 2");
        return NULL;
    }
    Hook *self = PyObject_GC_New(Hook, &HookType);
    if (self == NULL) {
        return NULL;
    }
    self->original = Py_NewRef(original);
    Py_INCREF(name);
    PyUnicode_InternInPlace(&name);
    self->name = name;
    self->kind = kind;
    self->seen_type = NULL;
    self->seen_tag = 0;
    self->seen_first = 0;
    self->vectorcall = hook_vectorcall;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(kinds, classify, getcurrent, greenlet_type, depth, sites): what it reads."},
    {"drain", drain, METH_VARARGS,
     "drain(settled, clear): the counts made in place since the last drain, reset."},
    {"forget", forget, METH_NOARGS,
     "Drop the sites and the last statement's fingerprint found so far (capture cleared its "
     "caches, or changed what is counted)."},
    {"site", site, METH_NOARGS, "The caller's call site from the sites cache, or None."},
    {"bind", bind, METH_VARARGS,
     "bind(namespace, shapes, shape, intern, loader, errors): the listener's state."},
    {"capture", (PyCFunction)(void (*)(void))capture, METH_FASTCALL,
     "capture(cursor, statement, parameters, context, executemany=False): the listener."},
    {"hook", hook, METH_VARARGS,
     "hook(original, name, kind): a dialect method that records its statement, then runs."},
    {"locate", locate, METH_NOARGS,
     "The caller's call-site hash and user frames, innermost first: (code, f_lasti, line)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_walk", "The call-site walk of pytest_noplusone.capture, in C.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__walk(void)
{
    if (PyType_Ready(&HookType) < 0) {
        return NULL;
    }
    empty_tuple = PyTuple_New(0);
    if (empty_tuple == NULL) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module != NULL && PyModule_AddObjectRef(module, "Hook", (PyObject *)&HookType) < 0) {
        Py_CLEAR(module);
    }
    return module;
}
