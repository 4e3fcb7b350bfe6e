// Placeholder translation unit until the first pass lands (pass framework issue).
namespace lwc::passes {}
