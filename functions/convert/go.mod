module mp3converter/functions/convert

go 1.26
