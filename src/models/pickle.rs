//! A weights-only reader of the pickles inside `pytorch_model.bin`, for both of torch's formats
//! (see [`super::torch_file`]).
//!
//! A pickle is a small program: its `GLOBAL` opcodes import any Python callable by name and
//! `REDUCE` calls it, which is how a hostile "weights" file runs `os.system`. This reader runs
//! nothing. It interprets the opcodes a `torch.save` of a state dict uses and accepts, as
//! callables, only the ones torch's own weights-only loader (`torch.load(weights_only=True)`,
//! which transformers uses) accepts for plain tensors: `collections.OrderedDict`, the
//! `torch._utils._rebuild_tensor*` / `_rebuild_parameter*` functions, the `torch.*Storage` types,
//! `torch.Size`, `_codecs.encode` and `builtins.set`. Each of those is modelled here by what it
//! builds (a dict, a tensor reference, ...), never looked up or called. Any other global is
//! refused the moment it is read, naming it, before anything after it is interpreted.
//!
//! Tensors come out as [`TensorRef`]s: which storage, the element offset, sizes and strides.
//! Their bytes are read later by the container code, one tensor at a time.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::rc::Rc;

use candle_core::DType;

/// Why a pickle could not be read. The container code turns each kind into the matching
/// [`super::ModelError`]: damage keeps the "download it again" hint, the others do not.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PickleError {
    /// The bytes end early or contradict themselves: a cut-short or damaged download.
    Damaged(String),
    /// A well-formed pickle that is not a plain torch state dict (an opcode or value this reader
    /// does not interpret).
    Format(String),
    /// The pickle imports a callable outside the weights-only allowlist, `module.name`.
    Refused(String),
}

impl std::fmt::Display for PickleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Damaged(m) | Self::Format(m) => f.write_str(m),
            Self::Refused(global) => write!(f, "the pickle imports `{global}`"),
        }
    }
}

type Result<T> = std::result::Result<T, PickleError>;

/// The element type of a torch storage, from its `torch.*Storage` class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StorageDtype {
    /// The class name, for messages (`FloatStorage`).
    pub name: &'static str,
    /// Bytes per element, needed to step over storages even of types candle cannot hold.
    pub size: usize,
    /// The candle dtype, `None` for types candle has no equivalent of (complex, int8,
    /// quantized).
    pub dtype: Option<DType>,
}

/// The storage classes torch's weights-only loader accepts (module `torch`, or `torch.storage`
/// for the untyped one), with their element types.
const STORAGE_TYPES: &[(&str, usize, Option<DType>)] = &[
    ("FloatStorage", 4, Some(DType::F32)),
    ("DoubleStorage", 8, Some(DType::F64)),
    ("HalfStorage", 2, Some(DType::F16)),
    ("BFloat16Storage", 2, Some(DType::BF16)),
    ("LongStorage", 8, Some(DType::I64)),
    ("IntStorage", 4, Some(DType::I32)),
    ("ShortStorage", 2, Some(DType::I16)),
    ("ByteStorage", 1, Some(DType::U8)),
    ("BoolStorage", 1, Some(DType::U8)),
    ("CharStorage", 1, None),
    ("ComplexFloatStorage", 8, None),
    ("ComplexDoubleStorage", 16, None),
    ("QInt8Storage", 1, None),
    ("QUInt8Storage", 1, None),
    ("QInt32Storage", 4, None),
    ("QUInt4x2Storage", 1, None),
    ("QUInt2x4Storage", 1, None),
    ("UntypedStorage", 1, Some(DType::U8)),
];

fn storage_dtype(module: &str, name: &str) -> Option<StorageDtype> {
    let (name, size, dtype) = STORAGE_TYPES.iter().find(|(n, ..)| *n == name)?;
    let module_ok = module == "torch" || (*name == "UntypedStorage" && module == "torch.storage");
    module_ok.then_some(StorageDtype {
        name,
        size: *size,
        dtype: *dtype,
    })
}

/// One storage as the pickle describes it: torch writes each once and tensors (tied weights,
/// views) share it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StorageInfo {
    pub dtype: StorageDtype,
    /// Elements in the whole storage.
    pub numel: usize,
}

/// Where one tensor's elements lie.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TensorRef {
    /// The key of the storage (a file name in the zip format, an entry of the trailing key list
    /// in the legacy one).
    pub storage: String,
    pub dtype: StorageDtype,
    /// Offset in elements from the start of the storage (a legacy storage view's offset
    /// included).
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

impl TensorRef {
    /// The element count; `None` if it overflows.
    pub fn numel(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
    }

    /// One past the last element (relative to the storage start) the tensor reads; `offset` for
    /// an empty tensor.
    pub fn end(&self) -> Option<usize> {
        if self.numel()? == 0 {
            return Some(self.offset);
        }
        self.shape
            .iter()
            .zip(&self.stride)
            .try_fold(self.offset + 1, |end, (&n, &s)| {
                end.checked_add((n - 1).checked_mul(s)?)
            })
    }

    /// Whether the elements lie in row-major order without gaps.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&n, &s) in self.shape.iter().zip(&self.stride).rev() {
            if n != 1 && s != expected {
                return false;
            }
            expected *= n;
        }
        true
    }
}

/// The callables a state dict's pickle may name; each is modelled, never called.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildTensorV2,
    RebuildParameter,
    RebuildParameterWithState,
    Size,
    Set,
    CodecsEncode,
    Storage(StorageDtype),
}

impl Global {
    fn find(module: &str, name: &str) -> Option<Self> {
        Some(match (module, name) {
            ("collections", "OrderedDict") => Self::OrderedDict,
            ("torch._utils", "_rebuild_tensor") => Self::RebuildTensor,
            ("torch._utils", "_rebuild_tensor_v2") => Self::RebuildTensorV2,
            ("torch._utils", "_rebuild_parameter") => Self::RebuildParameter,
            ("torch._utils", "_rebuild_parameter_with_state") => Self::RebuildParameterWithState,
            ("torch", "Size") => Self::Size,
            ("builtins", "set") => Self::Set,
            ("_codecs", "encode") => Self::CodecsEncode,
            _ => Self::Storage(storage_dtype(module, name)?),
        })
    }
}

type List = Rc<RefCell<Vec<Value>>>;
type Dict = Rc<RefCell<Vec<(Value, Value)>>>;

/// A value on the pickle machine's stack. Lists and dicts are shared (`Rc<RefCell>`) because
/// the memo and the stack hold the same object, which later opcodes fill in.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i128),
    // Floats and bytes are read so that any state dict parses (its metadata may hold them);
    // no tensor needs their values.
    Float(#[allow(dead_code)] f64),
    Str(String),
    Bytes(#[allow(dead_code)] Vec<u8>),
    Tuple(Rc<Vec<Value>>),
    List(List),
    Dict(Dict),
    Global(Global),
    /// A storage reference from a persistent id: key, element offset and length of the view.
    Storage {
        key: String,
        dtype: StorageDtype,
        offset: usize,
        len: usize,
    },
    Tensor(Rc<TensorRef>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Self::None => "None",
            Self::Bool(_) => "a bool",
            Self::Int(_) => "an int",
            Self::Float(_) => "a float",
            Self::Str(_) => "a string",
            Self::Bytes(_) => "bytes",
            Self::Tuple(_) => "a tuple",
            Self::List(_) => "a list",
            Self::Dict(_) => "a dict",
            Self::Global(_) => "a class or function",
            Self::Storage { .. } => "a storage",
            Self::Tensor(_) => "a tensor",
        }
    }

    fn as_usize(&self, what: &str) -> Result<usize> {
        match self {
            Self::Int(n) => usize::try_from(*n)
                .map_err(|_| PickleError::Format(format!("{what} is {n}, not a size"))),
            other => Err(format(format!("{what} is {}, not an int", other.kind()))),
        }
    }

    fn items(&self, what: &str) -> Result<Vec<Value>> {
        match self {
            Self::Tuple(t) => Ok(t.as_ref().clone()),
            Self::List(l) => Ok(l.borrow().clone()),
            other => Err(format(format!("{what} is {}, not a tuple", other.kind()))),
        }
    }

    fn sizes(&self, what: &str) -> Result<Vec<usize>> {
        self.items(what)?.iter().map(|v| v.as_usize(what)).collect()
    }

    /// The entries of a dict, in pickle order.
    pub fn dict_entries(&self) -> Option<Vec<(Value, Value)>> {
        match self {
            Self::Dict(d) => Some(d.borrow().clone()),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i128> {
        match self {
            Self::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_tensor(&self) -> Option<&TensorRef> {
        match self {
            Self::Tensor(t) => Some(t),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<Vec<Value>> {
        match self {
            Self::List(l) => Some(l.borrow().clone()),
            Self::Tuple(t) => Some(t.as_ref().clone()),
            _ => None,
        }
    }
}

fn format(message: String) -> PickleError {
    PickleError::Format(message)
}

/// A byte source that knows how many bytes it may still give, so that a length field in a
/// damaged file cannot make us allocate more than the file holds.
pub(crate) struct Input<R> {
    reader: R,
    pos: u64,
    len: u64,
}

impl<R: Read> Input<R> {
    /// `reader` positioned at `pos`, of a source `len` bytes long.
    pub fn new(reader: R, pos: u64, len: u64) -> Self {
        Self { reader, pos, len }
    }

    pub fn position(&self) -> u64 {
        self.pos
    }

    pub fn into_inner(self) -> R {
        self.reader
    }

    fn bytes(&mut self, n: u64) -> Result<Vec<u8>> {
        if n > self.len.saturating_sub(self.pos) {
            return Err(PickleError::Damaged(format!(
                "it ends at byte {} inside a pickle that needs {n} more bytes at byte {}",
                self.len, self.pos
            )));
        }
        let mut buf = vec![0; n as usize];
        self.reader.read_exact(&mut buf).map_err(|e| {
            PickleError::Damaged(format!("cannot read byte {} of the pickle: {e}", self.pos))
        })?;
        self.pos += n;
        Ok(buf)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.bytes(N as u64)?.try_into().expect("N bytes"))
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A `\n`-terminated ASCII line (the operands of GLOBAL and INST).
    fn line(&mut self) -> Result<String> {
        let mut line = Vec::new();
        loop {
            match self.u8()? {
                b'\n' => break,
                b => line.push(b),
            }
            if line.len() > 1024 {
                return Err(format("a GLOBAL name longer than 1024 bytes".into()));
            }
        }
        String::from_utf8(line).map_err(|_| format("a GLOBAL name that is not UTF-8".into()))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

/// What one pickle held: its value and the storages its tensors use (root key -> info).
pub(crate) struct Unpickled {
    pub value: Value,
    pub storages: HashMap<String, StorageInfo>,
}

/// Reads one pickle (up to and including STOP) from `input`.
pub(crate) fn unpickle<R: Read>(input: &mut Input<R>) -> Result<Unpickled> {
    let mut machine = Machine::default();
    let value = machine.run(input)?;
    Ok(Unpickled {
        value,
        storages: machine.storages,
    })
}

#[derive(Default)]
struct Machine {
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    storages: HashMap<String, StorageInfo>,
}

impl Machine {
    fn pop(&mut self) -> Result<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(PickleError::Damaged(
                "the pickle pops an empty stack".into(),
            ));
        }
        Ok(self.stack.pop().expect("checked"))
    }

    fn top(&mut self) -> Result<&mut Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(PickleError::Damaged(
                "the pickle reads an empty stack".into(),
            ));
        }
        Ok(self.stack.last_mut().expect("checked"))
    }

    /// The values pushed since the last MARK, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| PickleError::Damaged("the pickle closes a MARK it never set".into()))?;
        Ok(self.stack.split_off(mark))
    }

    fn memo_get(&self, index: u32) -> Result<Value> {
        self.memo.get(&index).cloned().ok_or_else(|| {
            PickleError::Damaged(format!("the pickle reads memo {index}, never set"))
        })
    }

    fn memo_put(&mut self, index: u32) -> Result<()> {
        let value = self.top()?.clone();
        self.memo.insert(index, value);
        Ok(())
    }

    fn run<R: Read>(&mut self, input: &mut Input<R>) -> Result<Value> {
        loop {
            let at = input.position();
            let op = input.u8()?;
            match op {
                // PROTO: protocols 2 to 5 are binary; torch writes 2.
                0x80 => {
                    let protocol = input.u8()?;
                    if protocol > 5 {
                        return Err(format(format!("pickle protocol {protocol} is unknown")));
                    }
                }
                // FRAME (protocol 4): a length hint only.
                0x95 => {
                    input.array::<8>()?;
                }
                b'.' => {
                    let value = self.pop()?;
                    return Ok(value);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?.clone();
                    self.stack.push(top);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let n = i32::from_le_bytes(input.array()?);
                    self.stack.push(Value::Int(n.into()));
                }
                b'K' => {
                    let n = input.u8()?;
                    self.stack.push(Value::Int(n.into()));
                }
                b'M' => {
                    let n = u16::from_le_bytes(input.array()?);
                    self.stack.push(Value::Int(n.into()));
                }
                // LONG1 / LONG4: little-endian two's complement of the given length.
                0x8a | 0x8b => {
                    let len = if op == 0x8a {
                        input.u8()? as u64
                    } else {
                        input.u32()? as u64
                    };
                    if len > 16 {
                        return Err(format(format!("an integer of {len} bytes")));
                    }
                    let bytes = input.bytes(len)?;
                    let mut n: i128 = 0;
                    for (i, b) in bytes.iter().enumerate() {
                        n |= (*b as i128) << (8 * i);
                    }
                    if len > 0 && len < 16 && bytes[len as usize - 1] & 0x80 != 0 {
                        n -= 1i128 << (8 * len);
                    }
                    self.stack.push(Value::Int(n));
                }
                b'G' => {
                    let x = f64::from_be_bytes(input.array()?);
                    self.stack.push(Value::Float(x));
                }
                // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
                b'X' | 0x8c | 0x8d => {
                    let len = match op {
                        b'X' => input.u32()? as u64,
                        0x8c => input.u8()? as u64,
                        _ => input.u64()?,
                    };
                    let bytes = input.bytes(len)?;
                    let text = String::from_utf8(bytes).map_err(|_| {
                        PickleError::Damaged(format!("a string at byte {at} is not UTF-8"))
                    })?;
                    self.stack.push(Value::Str(text));
                }
                // BINSTRING, SHORT_BINSTRING: Python 2 `str`, read as UTF-8 like torch.load.
                b'T' | b'U' => {
                    let len = if op == b'T' {
                        input.u32()? as u64
                    } else {
                        input.u8()? as u64
                    };
                    let bytes = input.bytes(len)?;
                    self.stack.push(match String::from_utf8(bytes) {
                        Ok(text) => Value::Str(text),
                        Err(e) => Value::Bytes(e.into_bytes()),
                    });
                }
                // BINBYTES, SHORT_BINBYTES, BINBYTES8
                b'B' | b'C' | 0x8e => {
                    let len = match op {
                        b'B' => input.u32()? as u64,
                        b'C' => input.u8()? as u64,
                        _ => input.u64()?,
                    };
                    let bytes = input.bytes(len)?;
                    self.stack.push(Value::Bytes(bytes));
                }
                b')' => self.stack.push(Value::Tuple(Rc::new(Vec::new()))),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                b']' => self.stack.push(Value::List(Rc::default())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(items))));
                }
                b'a' => {
                    let item = self.pop()?;
                    self.list_top("APPEND")?.borrow_mut().push(item);
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.list_top("APPENDS")?.borrow_mut().extend(items);
                }
                0x8f => self.stack.push(Value::List(Rc::default())),
                0x90 => {
                    let items = self.pop_mark()?;
                    self.list_top("ADDITEMS")?.borrow_mut().extend(items);
                }
                b'}' => self.stack.push(Value::Dict(Rc::default())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let dict = Value::Dict(Rc::new(RefCell::new(pairs(items)?)));
                    self.stack.push(dict);
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    set_item(&self.dict_top("SETITEM")?, key, value);
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let dict = self.dict_top("SETITEMS")?;
                    for (key, value) in pairs(items)? {
                        set_item(&dict, key, value);
                    }
                }
                b'c' => {
                    let module = input.line()?;
                    let name = input.line()?;
                    let global = allowed(&module, &name)?;
                    self.stack.push(Value::Global(global));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(module), Value::Str(name)) => {
                            let global = allowed(&module, &name)?;
                            self.stack.push(Value::Global(global));
                        }
                        _ => return Err(format("STACK_GLOBAL without two strings".into())),
                    }
                }
                // INST names a callable like GLOBAL and calls it: refuse it by name.
                b'i' => {
                    let module = input.line()?;
                    let name = input.line()?;
                    allowed(&module, &name)?;
                    return Err(unsupported(op, at));
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let result = self.reduce(callable, args)?;
                    self.stack.push(result);
                }
                // NEWOBJ: `cls.__new__(cls, *args)`; only an empty OrderedDict is plain data.
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    match (&cls, args.items("NEWOBJ arguments")?.is_empty()) {
                        (Value::Global(Global::OrderedDict), true) => {
                            self.stack.push(Value::Dict(Rc::default()))
                        }
                        _ => {
                            return Err(format(format!(
                                "NEWOBJ of {} is not part of a state dict",
                                cls.kind()
                            )))
                        }
                    }
                }
                b'b' => {
                    let state = self.pop()?;
                    match self.top()? {
                        // OrderedDict attributes (a state dict's `_metadata`): not weights.
                        Value::Dict(_) => {}
                        other => {
                            return Err(format(format!(
                                "BUILD on {} (with {}) is not part of a state dict",
                                other.kind(),
                                state.kind()
                            )))
                        }
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = self.persistent_load(pid)?;
                    self.stack.push(storage);
                }
                b'q' => {
                    let index = input.u8()?;
                    self.memo_put(index.into())?;
                }
                b'r' => {
                    let index = input.u32()?;
                    self.memo_put(index)?;
                }
                0x94 => {
                    let index = self.memo.len() as u32;
                    self.memo_put(index)?;
                }
                b'h' => {
                    let index = input.u8()?;
                    let value = self.memo_get(index.into())?;
                    self.stack.push(value);
                }
                b'j' => {
                    let index = input.u32()?;
                    let value = self.memo_get(index)?;
                    self.stack.push(value);
                }
                _ => return Err(unsupported(op, at)),
            }
        }
    }

    fn list_top(&mut self, op: &str) -> Result<List> {
        match self.top()? {
            Value::List(l) => Ok(l.clone()),
            other => Err(format(format!("{op} on {}, not a list", other.kind()))),
        }
    }

    fn dict_top(&mut self, op: &str) -> Result<Dict> {
        match self.top()? {
            Value::Dict(d) => Ok(d.clone()),
            other => Err(format(format!("{op} on {}, not a dict", other.kind()))),
        }
    }

    /// The result of calling an allowed callable, built here from its arguments.
    fn reduce(&mut self, callable: Value, args: Value) -> Result<Value> {
        let Value::Global(global) = callable else {
            return Err(format(format!("REDUCE calls {}", callable.kind())));
        };
        let args = args.items("REDUCE arguments")?;
        let arity = |range: std::ops::RangeInclusive<usize>, name: &str| {
            if range.contains(&args.len()) {
                Ok(())
            } else {
                Err(format(format!("{name} with {} arguments", args.len())))
            }
        };
        match global {
            Global::OrderedDict => {
                arity(0..=1, "OrderedDict")?;
                let items = match args.first() {
                    None => Vec::new(),
                    Some(v) => v
                        .items("OrderedDict's argument")?
                        .into_iter()
                        .map(|pair| match pair.items("an OrderedDict item")?.as_slice() {
                            [k, v] => Ok((k.clone(), v.clone())),
                            _ => Err(format("an OrderedDict item is not a pair".into())),
                        })
                        .collect::<Result<_>>()?,
                };
                Ok(Value::Dict(Rc::new(RefCell::new(items))))
            }
            Global::Set => {
                arity(0..=1, "set")?;
                let items = match args.first() {
                    None => Vec::new(),
                    Some(v) => v.items("set's argument")?,
                };
                Ok(Value::List(Rc::new(RefCell::new(items))))
            }
            Global::Size => {
                arity(1..=1, "torch.Size")?;
                Ok(Value::Tuple(Rc::new(args[0].items("torch.Size")?)))
            }
            Global::CodecsEncode => {
                arity(1..=2, "_codecs.encode")?;
                match (&args[0], args.get(1).and_then(Value::as_str)) {
                    (Value::Str(text), Some("latin1" | "latin-1")) => text
                        .chars()
                        .map(|c| u8::try_from(c as u32).ok())
                        .collect::<Option<Vec<u8>>>()
                        .map(Value::Bytes)
                        .ok_or_else(|| format("_codecs.encode of a non-latin1 string".into())),
                    _ => Err(format("_codecs.encode other than to latin1".into())),
                }
            }
            Global::RebuildTensor | Global::RebuildTensorV2 => {
                if global == Global::RebuildTensor {
                    arity(4..=4, "_rebuild_tensor")?;
                } else {
                    arity(6..=7, "_rebuild_tensor_v2")?;
                }
                self.tensor(&args[0], &args[1], &args[2], &args[3])
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => {
                arity(3..=4, "_rebuild_parameter")?;
                match &args[0] {
                    Value::Tensor(_) => Ok(args[0].clone()),
                    other => Err(format(format!("a parameter of {}", other.kind()))),
                }
            }
            Global::Storage(dtype) => Err(format(format!(
                "the pickle calls torch.{} directly",
                dtype.name
            ))),
        }
    }

    fn tensor(
        &mut self,
        storage: &Value,
        offset: &Value,
        size: &Value,
        stride: &Value,
    ) -> Result<Value> {
        let Value::Storage {
            key,
            dtype,
            offset: view_offset,
            len,
        } = storage
        else {
            return Err(format(format!("a tensor built on {}", storage.kind())));
        };
        let tensor = TensorRef {
            storage: key.clone(),
            dtype: *dtype,
            offset: view_offset
                .checked_add(offset.as_usize("a tensor's storage offset")?)
                .ok_or_else(|| format("a storage offset out of range".into()))?,
            shape: size.sizes("a tensor's size")?,
            stride: stride.sizes("a tensor's stride")?,
        };
        if tensor.shape.len() != tensor.stride.len() {
            return Err(format(format!(
                "a tensor with size {:?} but stride {:?}",
                tensor.shape, tensor.stride
            )));
        }
        // A state dict's weights never repeat elements (stride-0 "expanded" views); refusing
        // more elements than the storage holds also bounds what reading the tensor allocates.
        match tensor.numel() {
            Some(n) if n <= *len => {}
            _ => {
                return Err(format(format!(
                    "a tensor of size {:?} over a storage view of {len} elements (an expanded \
                     view, not a plain weight)",
                    tensor.shape
                )))
            }
        }
        match tensor.end() {
            Some(end) if end <= view_offset + len => Ok(Value::Tensor(Rc::new(tensor))),
            _ => Err(PickleError::Damaged(format!(
                "a tensor (size {:?}, stride {:?}, offset {}) reaches past the end of its \
                 storage of {} elements",
                tensor.shape,
                tensor.stride,
                tensor.offset - view_offset,
                len
            ))),
        }
    }

    /// torch's persistent id of a storage: `('storage', StorageType, key, location, numel)`
    /// (zip format) or the same with a trailing `view_metadata` (legacy format), which is
    /// `None` or `(view_key, offset, size)` for a view into the root storage.
    fn persistent_load(&mut self, pid: Value) -> Result<Value> {
        let items = pid.items("a persistent id")?;
        let (ty, key, numel, view) = match items.as_slice() {
            [Value::Str(tag), ty, key, _location, numel] if tag == "storage" => {
                (ty, key, numel, None)
            }
            [Value::Str(tag), ty, key, _location, numel, view] if tag == "storage" => {
                (ty, key, numel, Some(view))
            }
            _ => {
                return Err(format(
                    "a persistent id that is not a torch storage (a module or other object)".into(),
                ))
            }
        };
        let Value::Global(Global::Storage(dtype)) = ty else {
            return Err(format(format!("a storage typed by {}", ty.kind())));
        };
        let key = match key {
            Value::Str(k) => k.clone(),
            other => return Err(format(format!("a storage key that is {}", other.kind()))),
        };
        let numel = numel.as_usize("a storage's element count")?;
        match self.storages.get(&key) {
            Some(known) if known.dtype != *dtype || known.numel != numel => {
                return Err(format(format!(
                    "storage {key} is read both as {} of {} and as {} of {numel}",
                    known.dtype.name, known.numel, dtype.name
                )))
            }
            Some(_) => {}
            None => {
                self.storages.insert(
                    key.clone(),
                    StorageInfo {
                        dtype: *dtype,
                        numel,
                    },
                );
            }
        }
        let (offset, len) = match view {
            None | Some(Value::None) => (0, numel),
            Some(view) => match view.items("a storage view")?.as_slice() {
                [_, offset, size] => {
                    let offset = offset.as_usize("a storage view's offset")?;
                    let size = size.as_usize("a storage view's size")?;
                    if offset.checked_add(size).is_none_or(|end| end > numel) {
                        return Err(PickleError::Damaged(format!(
                            "a view of {size} elements at {offset} in storage {key} of {numel}"
                        )));
                    }
                    (offset, size)
                }
                _ => return Err(format("a storage view that is not a triple".into())),
            },
        };
        Ok(Value::Storage {
            key,
            dtype: *dtype,
            offset,
            len,
        })
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        return Err(PickleError::Damaged(
            "a dict with a key but no value".into(),
        ));
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// Sets `key` like a Python dict: a repeated string or int key replaces the earlier value.
fn set_item(dict: &Dict, key: Value, value: Value) {
    let mut dict = dict.borrow_mut();
    let same = |k: &Value| match (k, &key) {
        (Value::Str(a), Value::Str(b)) => a == b,
        (Value::Int(a), Value::Int(b)) => a == b,
        _ => false,
    };
    match dict.iter_mut().find(|(k, _)| same(k)) {
        Some(entry) => entry.1 = value,
        None => dict.push((key, value)),
    }
}

fn allowed(module: &str, name: &str) -> Result<Global> {
    Global::find(module, name).ok_or_else(|| PickleError::Refused(format!("{module}.{name}")))
}

fn unsupported(op: u8, at: u64) -> PickleError {
    let shown = if op.is_ascii_graphic() {
        format!("`{}` (0x{op:02x})", op as char)
    } else {
        format!("0x{op:02x}")
    };
    PickleError::Format(format!(
        "pickle opcode {shown} at byte {at} is not one a torch state dict uses"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> Result<Unpickled> {
        let mut input = Input::new(bytes, 0, bytes.len() as u64);
        unpickle(&mut input)
    }

    fn unicode(s: &str) -> Vec<u8> {
        let mut out = vec![b'X'];
        out.extend((s.len() as u32).to_le_bytes());
        out.extend(s.as_bytes());
        out
    }

    /// `_rebuild_tensor_v2(storage(key, FloatStorage, numel), offset, size, stride, False,
    /// OrderedDict())` as torch writes it (memo use aside).
    fn tensor(key: &str, numel: u8, offset: u8, size: &[u8], stride: &[u8]) -> Vec<u8> {
        let mut out = b"ctorch._utils\n_rebuild_tensor_v2\n(".to_vec();
        out.extend(b"(");
        out.extend(unicode("storage"));
        out.extend(b"ctorch\nFloatStorage\n");
        out.extend(unicode(key));
        out.extend(unicode("cpu"));
        out.extend([b'K', numel, b't', b'Q', b'K', offset, b'(']);
        for s in size {
            out.extend([b'K', *s]);
        }
        out.extend(b"t(");
        for s in stride {
            out.extend([b'K', *s]);
        }
        out.extend(b"t\x89ccollections\nOrderedDict\n)Rt");
        out.extend(b"R");
        out
    }

    #[test]
    fn reads_a_state_dict_with_shared_and_strided_storages() {
        let mut p = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(".to_vec();
        p.extend(unicode("a"));
        p.extend(tensor("0", 6, 0, &[2, 3], &[3, 1]));
        p.extend(b"q\x02");
        p.extend(unicode("a.t"));
        p.extend(tensor("0", 6, 0, &[3, 2], &[1, 3]));
        p.extend(unicode("tail"));
        p.extend(tensor("0", 6, 4, &[2], &[1]));
        p.extend(unicode("again"));
        p.extend(b"h\x02");
        // OrderedDict attributes (`_metadata`) are ignored.
        p.extend(b"u}");
        p.extend(unicode("_metadata"));
        p.extend(b"}sb.");
        let out = run(&p).unwrap();
        let entries = out.value.dict_entries().unwrap();
        let names: Vec<_> = entries.iter().map(|(k, _)| k.as_str().unwrap()).collect();
        assert_eq!(names, ["a", "a.t", "tail", "again"]);
        let t = |i: usize| entries[i].1.as_tensor().unwrap().clone();
        assert_eq!((t(0).shape, t(0).stride), (vec![2, 3], vec![3, 1]));
        assert!(t(0).is_contiguous() && !t(1).is_contiguous());
        assert_eq!((t(2).offset, t(2).end()), (4, Some(6)));
        assert_eq!(t(3), t(0));
        assert_eq!(out.storages.len(), 1);
        assert_eq!(out.storages["0"].numel, 6);
        assert_eq!(out.storages["0"].dtype.dtype, Some(DType::F32));
    }

    #[test]
    fn refuses_any_other_global_by_name_before_reading_on() {
        for (stream, global) in [
            (
                &b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R."[..],
                "os.system",
            ),
            (
                b"\x80\x02cposix\nsystem\n(X\x02\x00\x00\x00lstR.",
                "posix.system",
            ),
            (b"\x80\x02cbuiltins\neval\n\xff\xff", "builtins.eval"),
            (
                b"\x80\x04\x8c\x08builtins\x94\x8c\x04exec\x94\x93.",
                "builtins.exec",
            ),
            (b"(ios\nsystem\nX\x02\x00\x00\x00ls.", "os.system"),
            (b"\x80\x02ctorch\nload\n.", "torch.load"),
            (
                b"\x80\x02ctorch._utils\n_rebuild_device_tensor_from_numpy\n.",
                "torch._utils._rebuild_device_tensor_from_numpy",
            ),
        ] {
            let err = run(stream).err().unwrap();
            assert_eq!(err, PickleError::Refused(global.into()), "{stream:?}");
        }
    }

    #[test]
    fn a_stream_cut_short_is_damage_and_an_unknown_opcode_a_format_problem() {
        let mut p = b"\x80\x02}(".to_vec();
        p.extend(unicode("a"));
        p.extend(tensor("0", 6, 0, &[2, 3], &[3, 1]));
        p.extend(b"u.");
        assert!(run(&p).is_ok());
        for cut in [1, 5, p.len() / 2, p.len() - 1] {
            assert!(
                matches!(run(&p[..cut]), Err(PickleError::Damaged(_))),
                "cut at {cut}"
            );
        }
        // A length field beyond the end of the data allocates nothing.
        assert!(matches!(
            run(b"\x80\x02X\xff\xff\xff\x7f"),
            Err(PickleError::Damaged(_))
        ));
        let err = run(b"\x80\x02I1\n.").err().unwrap();
        assert!(
            matches!(&err, PickleError::Format(m) if m.contains("`I`")),
            "{err:?}"
        );
        // A tensor that reads past its storage.
        let mut p = b"\x80\x02".to_vec();
        p.extend(tensor("0", 6, 2, &[2, 3], &[3, 1]));
        p.push(b'.');
        assert!(matches!(run(&p), Err(PickleError::Damaged(m)) if m.contains("past the end")));
    }

    #[test]
    fn reads_the_primitive_values_torch_writes() {
        // The legacy magic number (LONG1), the protocol (BININT2), sys_info (a dict with a bool).
        let magic = run(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.").unwrap();
        assert_eq!(magic.value.as_int(), Some(0x1950a86a20f9469cfc6c));
        assert_eq!(run(b"\x8a\x01\xff.").unwrap().value.as_int(), Some(-1));
        assert_eq!(run(b"M\xe9\x03.").unwrap().value.as_int(), Some(1001));
        let info = run(b"}(X\x01\x00\x00\x00k\x88X\x01\x00\x00\x00nJ\xfe\xff\xff\xffu.")
            .unwrap()
            .value
            .dict_entries()
            .unwrap();
        assert_eq!(info[0].1.as_bool(), Some(true));
        assert_eq!(info[1].1.as_int(), Some(-2));
        let list = run(b"](X\x01\x00\x00\x00aX\x01\x00\x00\x00be.")
            .unwrap()
            .value;
        let keys: Vec<_> = list
            .as_list()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(keys, ["a", "b"]);
        let bytes =
            run(b"c_codecs\nencode\nX\x02\x00\x00\x00\xc3\xa9X\x06\x00\x00\x00latin1\x86R.");
        assert!(matches!(bytes.unwrap().value, Value::Bytes(b) if b == [0xe9]));
    }
}
