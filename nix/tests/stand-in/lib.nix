# TEST DOUBLE: a small stand-in for the parts of nixpkgs' `lib` that
# nix/build-image.nix and nix/modules use, including a minimal module system
# (imports, option declarations, mkIf / mkMerge / mkOverride pushed down
# lazily, priorities, typed merging, submodules, freeform types, and an error
# for definitions of options that do not exist).
#
# It exists because no nixpkgs can be fetched on the test machines. It follows
# nixpkgs' documented semantics closely enough to evaluate our modules; it is
# not nixpkgs and is never used outside nix/tests.
let
  inherit (builtins)
    all
    any
    attrNames
    concatLists
    concatStringsSep
    elem
    filter
    foldl'
    genericClosure
    genList
    head
    isAttrs
    isBool
    isFloat
    isFunction
    isInt
    isList
    isPath
    isString
    length
    listToAttrs
    mapAttrs
    replaceStrings
    tail
    typeOf
    zipAttrsWith
    ;

  # ---------------------------------------------------------------- basics

  concatMap = f: list: concatLists (map f list);
  imap0 = f: list: genList (i: f i (builtins.elemAt list i)) (length list);
  optional = cond: x: if cond then [ x ] else [ ];
  optionals = cond: xs: if cond then xs else [ ];
  optionalString = cond: s: if cond then s else "";
  optionalAttrs = cond: set: if cond then set else { };
  toList = x: if isList x then x else [ x ];
  attrValues = set: map (n: set.${n}) (attrNames set);
  mapAttrsToList = f: set: map (n: f n set.${n}) (attrNames set);
  filterAttrs =
    pred: set:
    listToAttrs (
      concatMap (n: optional (pred n set.${n}) {
        name = n;
        value = set.${n};
      }) (attrNames set)
    );
  filterAttrsRecursive =
    pred: set:
    listToAttrs (
      concatMap (
        n:
        let
          v = set.${n};
        in
        optional (pred n v) {
          name = n;
          value = if isAttrs v && !(isDerivation v) then filterAttrsRecursive pred v else v;
        }
      ) (attrNames set)
    );
  genAttrs =
    names: f:
    listToAttrs (
      map (n: {
        name = n;
        value = f n;
      }) names
    );
  recursiveUpdate =
    left: right:
    left
    // mapAttrs (
      n: v:
      if isAttrs v && left ? ${n} && isAttrs left.${n} && !(isDerivation v) then
        recursiveUpdate left.${n} v
      else
        v
    ) right;
  setAttrByPath =
    path: value: if path == [ ] then value else { ${head path} = setAttrByPath (tail path) value; };
  isDerivation = x: isAttrs x && x.type or null == "derivation";
  concatMapStringsSep = sep: f: list: concatStringsSep sep (map f list);
  makeBinPath = packages: concatStringsSep ":" (map (p: "${p}/bin") packages);
  hasPrefix =
    prefix: s: builtins.substring 0 (builtins.stringLength prefix) s == prefix;
  upperChars = [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ];
  lowerChars = [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];
  toLower = replaceStrings upperChars lowerChars;
  escapeShellArg = arg: "'${replaceStrings [ "'" ] [ "'\\''" ] (toString arg)}'";
  escapeShellArgs = args: concatStringsSep " " (map escapeShellArg args);
  assertMsg = pred: msg: pred || throw msg;
  literalExpression = text: {
    _type = "literalExpression";
    inherit text;
  };

  # ---------------------------------------------------------------- properties

  isType = t: v: isAttrs v && v._type or null == t;
  mkIf = condition: content: {
    _type = "if";
    inherit condition content;
  };
  mkMerge = contents: {
    _type = "merge";
    inherit contents;
  };
  mkOverride = priority: content: {
    _type = "override";
    inherit priority content;
  };
  mkOptionDefault = mkOverride 1500;
  mkDefault = mkOverride 1000;
  mkForce = mkOverride 50;

  mkOption = attrs: attrs // { _type = "option"; };
  mkEnableOption =
    name:
    mkOption {
      type = types.bool;
      default = false;
      example = true;
      description = "Whether to enable ${name}.";
    };
  mkPackageOption =
    pkgs: name: extra:
    mkOption (
      {
        type = types.package;
        default = pkgs.${name};
        defaultText = literalExpression "pkgs.${name}";
        description = "The ${name} package to use.";
      }
      // removeAttrs extra [ "default" ]
    );

  showLoc = loc: concatStringsSep "." loc;

  # Pushes mkIf / mkMerge / mkOverride found at the top of an attribute set
  # definition down into its attributes. Conditions are not evaluated, so a
  # module may test `config` in `mkIf` while defining other parts of it.
  pushDown =
    value:
    if isType "merge" value then
      zipAttrsWith (_: concatLists) (map pushDown value.contents)
    else if isType "if" value then
      mapAttrs (_: map (mkIf value.condition)) (pushDown value.content)
    else if isType "override" value then
      mapAttrs (_: map (mkOverride value.priority)) (pushDown value.content)
    else if isAttrs value then
      mapAttrs (_: v: [ v ]) value
    else
      throw "expected an attribute set but found ${typeOf value}";

  pushDownDefs =
    loc: defs:
    zipAttrsWith (_: concatLists) (
      map (
        def:
        mapAttrs (
          _:
          map (v: {
            inherit (def) file;
            value = v;
          })
        ) (pushDown def.value)
      ) defs
    );

  # Evaluates conditions and collects priorities of one definition.
  discharge =
    loc: value:
    if isType "merge" value then
      concatMap (discharge loc) value.contents
    else if isType "if" value then
      if !isBool value.condition then
        throw "mkIf called with a non-Boolean condition in a definition of `${showLoc loc}'"
      else if value.condition then
        discharge loc value.content
      else
        [ ]
    else if isType "override" value then
      map (d: d // { inherit (value) priority; }) (discharge loc value.content)
    else
      [
        {
          priority = 100;
          inherit value;
        }
      ];

  # Merges the definitions of one option; returns { isDefined, value }.
  mergeDefinitions =
    loc: type: defs:
    let
      discharged = concatMap (
        def: map (d: d // { inherit (def) file; }) (discharge loc def.value)
      ) defs;
      highest = foldl' (acc: d: if d.priority < acc then d.priority else acc) 100000 discharged;
      winners = filter (d: d.priority == highest) discharged;
      bad = filter (d: !(type.check d.value)) winners;
    in
    if winners == [ ] then
      { isDefined = false; }
    else if bad != [ ] then
      throw "A definition for option `${showLoc loc}' is not of type `${type.description}'. Definition values: ${
        concatMapStringsSep ", " (d: "${d.file}: ${showValue d.value}") bad
      }"
    else
      {
        isDefined = true;
        value = type.merge loc (map (d: { inherit (d) file value; }) winners);
      };

  showValue =
    v:
    if isString v then
      "\"${v}\""
    else if isBool v then
      (if v then "true" else "false")
    else if isInt v || isFloat v then
      toString v
    else if v == null then
      "null"
    else
      "<${typeOf v}>";

  mergeEqual =
    loc: defs:
    let
      first = head defs;
    in
    if all (d: d.value == first.value) defs then
      first.value
    else
      throw "The option `${showLoc loc}' has conflicting definition values: ${
        concatMapStringsSep ", " (d: "${d.file}: ${showValue d.value}") defs
      }";

  mergeOne =
    loc: defs:
    if length defs == 1 then
      (head defs).value
    else
      throw "The unique option `${showLoc loc}' is defined multiple times: ${
        concatMapStringsSep ", " (d: d.file) defs
      }";

  # ---------------------------------------------------------------- types

  mkType =
    attrs:
    {
      _type = "option-type";
      merge = mergeEqual;
      nestedTypes = { };
    }
    // attrs;

  types = rec {
    bool = mkType {
      name = "bool";
      description = "boolean";
      check = isBool;
    };
    int = mkType {
      name = "int";
      description = "signed integer";
      check = isInt;
    };
    float = mkType {
      name = "float";
      description = "floating point number";
      check = isFloat;
    };
    # nixpkgs' types.ints.positive (and its name and description).
    ints.positive = mkType {
      name = "positiveInt";
      description = "positive integer, meaning >0";
      check = x: isInt x && x > 0;
    };
    port = mkType {
      name = "port";
      description = "16 bit unsigned integer";
      check = x: isInt x && x >= 0 && x <= 65535;
    };
    str = mkType {
      name = "str";
      description = "string";
      check = isString;
    };
    # nixpkgs' types.strMatching: a string the whole of which the regular expression matches.
    strMatching =
      pattern:
      mkType {
        name = "strMatching ${builtins.toJSON pattern}";
        description = "string matching the pattern ${pattern}";
        check = x: isString x && builtins.match pattern x != null;
      };
    nonEmptyStr = mkType {
      name = "nonEmptyStr";
      description = "non-empty string";
      check = x: isString x && builtins.match "[ \t\n]*" x == null;
    };
    lines = mkType {
      name = "lines";
      description = "strings concatenated with \"\\n\"";
      check = isString;
      merge = _: defs: concatMapStringsSep "\n" (d: d.value) defs;
    };
    path = mkType {
      name = "path";
      description = "path";
      check = x: isPath x || (isString x && hasPrefix "/" x) || isDerivation x;
    };
    package = mkType {
      name = "package";
      description = "package";
      check = x: isDerivation x || (isString x && hasPrefix "/" x);
      merge = mergeOne;
    };
    attrs = mkType {
      name = "attrs";
      description = "attribute set";
      check = isAttrs;
      merge = _: defs: foldl' (acc: d: acc // d.value) { } defs;
    };
    anything = mkType {
      name = "anything";
      description = "anything";
      check = _: true;
      merge =
        loc: defs:
        let
          values = map (d: d.value) defs;
        in
        if all (v: isAttrs v && !(isDerivation v) && !(isType "if" v)) values then
          (attrsOf anything).merge loc defs
        else if all isList values then
          concatLists values
        else
          mergeEqual loc defs;
    };
    enum =
      values:
      mkType {
        name = "enum";
        description = "one of ${concatMapStringsSep ", " showValue values}";
        check = x: elem x values;
      };
    nullOr =
      elemType:
      mkType {
        name = "nullOr";
        description = "null or ${elemType.description}";
        check = x: x == null || elemType.check x;
        merge =
          loc: defs:
          if all (d: d.value == null) defs then
            null
          else if any (d: d.value == null) defs then
            throw "The option `${showLoc loc}' is defined both null and not null"
          else
            elemType.merge loc defs;
        nestedTypes.elemType = elemType;
        getSubOptions = elemType.getSubOptions or null;
      };
    listOf =
      elemType:
      mkType {
        name = "listOf";
        description = "list of ${elemType.description}";
        check = isList;
        merge =
          loc: defs:
          concatLists (
            imap0 (
              i: def:
              concatMap (
                x:
                let
                  merged = mergeDefinitions (loc ++ [ "[definition ${toString (i + 1)}]" ]) elemType [
                    {
                      inherit (def) file;
                      value = x;
                    }
                  ];
                in
                optional merged.isDefined merged.value
              ) def.value
            ) defs
          );
        nestedTypes.elemType = elemType;
        getSubOptions =
          if elemType.getSubOptions or null == null then
            null
          else
            loc: elemType.getSubOptions (loc ++ [ "*" ]);
      };
    attrsOf =
      elemType:
      mkType {
        name = "attrsOf";
        description = "attribute set of ${elemType.description}";
        check = x: isAttrs x && !(isDerivation x);
        merge =
          loc: defs:
          let
            merged = mapAttrs (name: mergeDefinitions (loc ++ [ name ]) elemType) (pushDownDefs loc defs);
          in
          mapAttrs (_: m: m.value) (filterAttrs (_: m: m.isDefined) merged);
        nestedTypes.elemType = elemType;
        getSubOptions =
          if elemType.getSubOptions or null == null then
            null
          else
            loc: elemType.getSubOptions (loc ++ [ "<name>" ]);
      };
    oneOf =
      ts:
      mkType {
        name = "oneOf";
        description = concatMapStringsSep " or " (t: t.description) ts;
        check = x: any (t: t.check x) ts;
        merge =
          loc: defs:
          let
            fitting = filter (t: all (d: t.check d.value) defs) ts;
          in
          if fitting == [ ] then
            throw "The option `${showLoc loc}' has definitions of different types"
          else
            (head fitting).merge loc defs;
      };
    either = a: b: oneOf [ a b ];
    submodule =
      modules:
      mkType {
        name = "submodule";
        description = "submodule";
        check = x: isAttrs x || isFunction x || isPath x;
        merge =
          loc: defs:
          (evalModules {
            modules =
              toList modules
              ++ map (d: {
                _file = d.file;
                config = d.value;
              }) defs;
            prefix = loc;
            specialArgs.name = builtins.elemAt loc (length loc - 1);
          }).config;
        getSubOptions =
          loc:
          (evalModules {
            modules = toList modules;
            prefix = loc;
          }).options;
      };
  };

  # ---------------------------------------------------------------- modules

  specialKeys = [
    "_file"
    "key"
    "imports"
    "options"
    "config"
    "freeformType"
    "meta"
  ];

  normalizeModule =
    args: file: m:
    let
      loaded = if isPath m || isString m then import m else m;
      value = if isFunction loaded then loaded args else loaded;
      structured = value ? config || value ? options;
    in
    if !isAttrs value then
      throw "module ${file} is not an attribute set or a function returning one"
    else
      {
        file = value._file or file;
        imports = value.imports or [ ];
        options = value.options or { };
        freeformType = value.freeformType or null;
        config = if structured then value.config or { } else removeAttrs value specialKeys;
      };

  evalModules =
    {
      modules,
      specialArgs ? { },
      prefix ? [ ],
    }:
    let
      args = specialArgs // {
        inherit config options lib;
      };

      fileOf = key: m: if isPath m || isString m then toString m else key;

      collected = genericClosure {
        startSet = imap0 (i: m: {
          key = if isPath m then toString m else "${showLoc prefix}#${toString i}";
          module = m;
        }) modules;
        operator =
          item:
          imap0 (j: m: {
            key = if isPath m then toString m else "${item.key}/${toString j}";
            module = m;
          }) (normalizeModule args (fileOf item.key item.module) item.module).imports;
      };

      normalized = map (item: normalizeModule args (fileOf item.key item.module) item.module) collected;

      freeformTypes = filter (t: t != null) (map (m: m.freeformType) normalized);
      freeformType = if freeformTypes == [ ] then null else head freeformTypes;

      # Merges option declarations; a leaf is an option, anything else a namespace.
      mergeDecls =
        loc: decls:
        if any (d: isType "option" d.value) decls then
          if length decls == 1 then
            (head decls).value // { declarations = [ (head decls).file ]; }
          else
            throw "The option `${showLoc loc}' is declared more than once: ${
              concatMapStringsSep ", " (d: d.file) decls
            }"
        else
          mapAttrs (name: mergeDecls (loc ++ [ name ])) (
            zipAttrsWith (_: concatLists) (
              map (d: mapAttrs (_: v: [ { inherit (d) file; value = v; } ]) d.value) decls
            )
          );

      options = mergeDecls prefix (
        map (m: {
          inherit (m) file;
          value = m.options;
        }) normalized
      );

      rootDefs = map (m: {
        inherit (m) file;
        value = m.config;
      }) normalized;

      freeformElem =
        if freeformType == null then null else freeformType.nestedTypes.elemType or freeformType;

      evalNode =
        loc: decl: defs:
        if isType "option" decl then
          let
            defaults = optional (decl ? default) {
              file = "default of ${showLoc loc}";
              value = mkOptionDefault decl.default;
            };
            merged = mergeDefinitions loc decl.type (defaults ++ defs);
          in
          if merged.isDefined then
            merged.value
          else
            throw "The option `${showLoc loc}' is used but not defined."
        else
          let
            pushed = pushDownDefs loc defs;
            undeclared = filter (n: !(decl ? ${n})) (attrNames pushed);
            freeform =
              if undeclared == [ ] then
                { }
              else if freeformElem == null then
                throw "The option `${showLoc (loc ++ [ (head undeclared) ])}' does not exist. Definition in: ${
                  concatMapStringsSep ", " (d: d.file) pushed.${head undeclared}
                }"
              else
                (types.attrsOf freeformElem).merge loc (
                  concatMap (
                    n:
                    map (d: {
                      inherit (d) file;
                      value.${n} = d.value;
                    }) pushed.${n}
                  ) undeclared
                );
          in
          freeform // mapAttrs (name: sub: evalNode (loc ++ [ name ]) sub (pushed.${name} or [ ])) decl;

      # Forces the names of every definition (not values) so that definitions
      # of options that do not exist are reported.
      checkNode =
        loc: decl: defs:
        if isType "option" decl then
          true
        else
          let
            pushed = pushDownDefs loc defs;
            undeclared = filter (n: !(decl ? ${n})) (attrNames pushed);
          in
          (
            undeclared == [ ]
            || freeformElem != null
            || throw "The option `${showLoc (loc ++ [ (head undeclared) ])}' does not exist. Definition in: ${
              concatMapStringsSep ", " (d: d.file) pushed.${head undeclared}
            }"
          )
          && all (name: checkNode (loc ++ [ name ]) decl.${name} (pushed.${name} or [ ])) (attrNames decl);

      config = evalNode prefix options rootDefs;
    in
    {
      inherit config options;
      check = checkNode prefix options rootDefs;
    };

  # Lists every option (path, type, default, description) for documentation checks.
  optionList =
    options:
    let
      walk =
        loc: node:
        if isType "option" node then
          [
            {
              name = showLoc loc;
              description = node.description or "";
              type = node.type.description;
              internal = node.internal or false;
              declarations = node.declarations or [ ];
            }
          ]
          ++ (
            if node.type.getSubOptions or null == null then
              [ ]
            else
              let
                sub = node.type.getSubOptions loc;
              in
              map (o: o // { declarations = node.declarations or [ ]; }) (
                concatMap (n: walk (loc ++ [ n ]) sub.${n}) (attrNames sub)
              )
          )
        else
          concatMap (n: walk (loc ++ [ n ]) node.${n}) (attrNames node);
    in
    walk [ ] options;

  removePrefix =
    prefix: s:
    if hasPrefix prefix s then
      builtins.substring (builtins.stringLength prefix) (builtins.stringLength s) s
    else
      s;
  splitString = sep: s: filter isString (builtins.split (replaceStrings [ "." "/" ] [ "\\." "/" ] sep) s);
  cleanSourceWith =
    {
      src,
      filter,
      name ? "source",
    }:
    builtins.path {
      path = src;
      inherit name filter;
    };
  importJSON = path: builtins.fromJSON (builtins.readFile path);
  getExe = package: "${package}/bin/${package.meta.mainProgram or package.pname or package.name}";

  lib = {
    inherit
      assertMsg
      cleanSourceWith
      getExe
      importJSON
      removePrefix
      splitString
      attrValues
      concatMap
      concatMapStringsSep
      escapeShellArg
      escapeShellArgs
      evalModules
      filterAttrs
      filterAttrsRecursive
      genAttrs
      hasPrefix
      isDerivation
      literalExpression
      makeBinPath
      mapAttrsToList
      mkDefault
      mkEnableOption
      mkForce
      mkIf
      mkMerge
      mkOption
      mkOptionDefault
      mkOverride
      mkPackageOption
      optional
      optionalAttrs
      optionalString
      optionals
      optionList
      recursiveUpdate
      setAttrByPath
      toList
      toLower
      types
      ;
    inherit (builtins)
      attrNames
      concatStringsSep
      elem
      mapAttrs
      ;
    licenses.mit = "MIT";
    platforms.linux = [
      "x86_64-linux"
      "aarch64-linux"
    ];
  };
in
lib
