#include "lwc/pass.h"

#include <algorithm>
#include <cmath>

#include "lwc/json_text.h"
#include "lwc/status.h"

namespace lwc {

std::string_view optionTypeName(OptionType t) {
  switch (t) {
    case OptionType::Bool: return "bool";
    case OptionType::Int: return "int";
    case OptionType::Float: return "float";
    case OptionType::String: return "string";
    case OptionType::StringList: return "string list";
  }
  return "?";
}

namespace {

std::string validKeys(const std::vector<OptionSpec>& specs) {
  if (specs.empty()) return "this pass takes no options";
  std::string s = "valid options: ";
  for (size_t i = 0; i < specs.size(); ++i) s += (i ? ", " : "") + specs[i].name;
  return s;
}

bool typeMatches(OptionType t, const nlohmann::json& v) {
  switch (t) {
    case OptionType::Bool: return v.is_boolean();
    case OptionType::Int: return v.is_number_integer() || (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>());
    case OptionType::Float: return v.is_number();
    case OptionType::String: return v.is_string();
    case OptionType::StringList:
      if (v.is_string()) return true;  // one name is a list of one
      if (!v.is_array()) return false;
      for (const auto& e : v)
        if (!e.is_string()) return false;
      return true;
  }
  return false;
}

}  // namespace

PassOptions::PassOptions(const std::vector<OptionSpec>& specs, const nlohmann::json& given, const std::string& where,
                         OptionNames names)
    : where_(where), names_(std::move(names)) {
  if (!given.is_null() && !given.is_object())
    fail(where, ": options must be a JSON object like {\"key\": value}, got ", briefJson(given));
  if (given.is_object())
    for (const auto& [key, v] : given.items()) {
      const OptionSpec* spec = nullptr;
      for (const auto& s : specs)
        if (s.name == key) spec = &s;
      if (!spec) {
        std::vector<std::string> names;
        for (const auto& s : specs) names.push_back(s.name);
        fail(this->key(key), ": unknown option", didYouMean(key, names), "; ", validKeys(specs));
      }
      if (!typeMatches(spec->type, v))
        fail(this->key(key), ": expected ", optionTypeName(spec->type), ", got ", briefJson(v));
      nlohmann::json value = v;
      if (spec->type == OptionType::StringList && v.is_string()) value = nlohmann::json::array({v});
      if (spec->type == OptionType::Int || spec->type == OptionType::Float) {
        // Checked as a double before an integer option is converted: 1e30 does not fit an int64
        // (the conversion is undefined), and the message gave the unbounded default, [0, 1e+300].
        const double d = v.get<double>();
        const bool integer = spec->type == OptionType::Int;
        const double hi = integer ? std::min(spec->max, 9007199254740992.0) : spec->max;  // 2^53: exact in a double
        if (!(d >= spec->min && (spec->max_exclusive ? d < hi : d <= hi))) {
          if (integer)
            fail(this->key(key), ": ", briefJson(v), " is outside the valid range [", static_cast<int64_t>(spec->min), ", ",
                 static_cast<int64_t>(hi), "]");
          fail(this->key(key), ": ", briefJson(v), " is outside the valid range [", spec->min, ", ", spec->max,
               spec->max_exclusive ? ")" : "]");
        }
        value = integer ? nlohmann::json(static_cast<int64_t>(d)) : nlohmann::json(d);
      }
      if (spec->type == OptionType::String && !spec->choices.empty()) {
        bool ok = false;
        for (const auto& c : spec->choices) ok = ok || c == v.get<std::string>();
        if (!ok) {
          std::string list;
          for (const auto& c : spec->choices) list += (list.empty() ? "" : ", ") + c;
          fail(this->key(key), ": \"", v.get<std::string>(), "\" is not one of ", list);
        }
      }
      values_[key] = value;
      given_.push_back(key);
    }
  for (const auto& s : specs)
    if (!values_.contains(s.name) && !s.default_value.is_null()) values_[s.name] = s.default_value;
}

std::string PassOptions::key(const std::string& name) const {
  const auto it = names_.find(name);
  return it != names_.end() ? it->second : where_ + "." + name;
}

std::string PassOptions::ref(const std::string& name) const {
  const auto it = names_.find(name);
  return it != names_.end() ? it->second : name;
}

bool PassOptions::has(const std::string& name) const { return values_.contains(name); }

bool PassOptions::given(const std::string& name) const {
  return std::find(given_.begin(), given_.end(), name) != given_.end();
}

const nlohmann::json& PassOptions::get(const std::string& name) const {
  auto it = values_.find(name);
  LWC_CHECK(it != values_.end(), "option ", name, " has no value and no default");
  return *it;
}

bool PassOptions::getBool(const std::string& name) const { return get(name).get<bool>(); }
int64_t PassOptions::getInt(const std::string& name) const { return get(name).get<int64_t>(); }
double PassOptions::getFloat(const std::string& name) const { return get(name).get<double>(); }
std::string PassOptions::getString(const std::string& name) const { return get(name).get<std::string>(); }
std::vector<std::string> PassOptions::getStrings(const std::string& name) const {
  return get(name).get<std::vector<std::string>>();
}

std::unique_ptr<Dataset> openCalibration(const PassContext& ctx, const Model& m, int64_t max_samples) {
  if (!ctx.calib) throw InternalError("openCalibration without calibration data");
  DataOptions dopt = ctx.calib->options;
  fitToModel(dopt, m);
  capSamples(dopt, max_samples, kCalibSamplesHint);
  return openDataset(dopt);
}

void Pass::configure(const nlohmann::json& options, const std::string& where, OptionNames names) {
  PassOptions o(optionSpecs(), options, where, std::move(names));
  validate(o);
  options_ = std::move(o);
}

void PassRegistry::add(Factory f) {
  auto probe = f();
  LWC_CHECK(probe, "pass factory returned null");
  const std::string n = probe->name();
  LWC_CHECK(!factories_.count(n), "pass registered twice: ", n);
  factories_[n] = std::move(f);
}

std::unique_ptr<Pass> PassRegistry::create(const std::string& name, const std::string& where) const {
  auto it = factories_.find(name);
  if (it == factories_.end()) {
    std::string list;
    std::vector<std::string> names;
    for (const auto& [n, f] : factories_) list += (list.empty() ? "" : ", ") + n, names.push_back(n);
    fail(where.empty() ? "" : where + ": ", "unknown pass '", name, "'", didYouMean(name, names), "; known passes: ", list,
         " (see `lwc passes`)");
  }
  auto p = it->second();
  p->configure(nlohmann::json::object(), where.empty() ? name : where);
  return p;
}

std::vector<std::unique_ptr<Pass>> PassRegistry::all() const {
  std::vector<std::unique_ptr<Pass>> out;
  for (const auto& [n, f] : factories_) out.push_back(f());
  return out;
}

std::vector<std::string> PassRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& [n, f] : factories_) out.push_back(n);
  return out;
}

}  // namespace lwc
